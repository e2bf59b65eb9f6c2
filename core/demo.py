"""Realistic demo rows for the log table (Korean and English chat, JSON, NULLs)."""

from __future__ import annotations

import logging
import random
import uuid
from datetime import datetime, timedelta
from typing import Any, Iterator

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine

from .config import Settings
from .db import check_connection
from .errors import BadSetting
from .models import DemoDataResult, utcnow

log = logging.getLogger(__name__)

KOREAN = [
    "안녕하세요, 오늘 날씨 어때요?",
    "주문한 상품이 아직 도착하지 않았어요. 확인 부탁드립니다!",
    "비밀번호를 잊어버렸는데, \"재설정\" 링크가 오지 않아요.",
    "감사합니다 😊 정말 큰 도움이 됐어요.",
    "환불 규정은 어떻게 되나요? 7일 이내, 미개봉 기준인가요?",
    "이 문장을 영어로 번역해 주세요:\n\"내일 회의는 3시에 시작합니다.\"",
    "코드에서 오류가 나요 🐛 TypeError: 'NoneType' object is not subscriptable",
    "요약해 주세요, 핵심만 세 줄로.",
]
ENGLISH = [
    "Hi! Can you help me write a cover letter?",
    "Summarize this article in three bullet points, please.",
    "What's the difference between \"affect\" and \"effect\"?",
    "My order #4821 hasn't shipped yet, any update?",
    "Translate to Korean: \"See you tomorrow, 10am sharp.\"",
    "Thanks, that fixed it 🎉",
    "Write a haiku about databases,\nwith a line break in it.",
    "Is 3,000 mg of vitamin C per day too much?",
]
ASSISTANT = [
    "물론이죠! 다음과 같이 정리해 드릴게요:\n1. 핵심 요약\n2. 세부 사항\n3. 다음 단계",
    "Sure — here's a draft. Let me know if you'd like a more formal tone.",
    "확인해 보니 배송이 지연되고 있습니다. 불편을 드려 죄송합니다 🙏",
    "The key difference: \"affect\" is usually a verb, \"effect\" usually a noun.",
    "네, 가능합니다. 아래 예시 코드를 참고하세요:\n```python\nprint(\"hello, 世界\")\n```",
    "I can't help with that, but here are some resources that might.",
]
MODELS = ["gpt-4o-mini", "claude-sonnet", "llama-3-70b", None]


def log_table(settings: Settings, engine: Engine) -> Table:
    """The demo log table's definition (the shape the dashboard's demo expects)."""
    schema, name = settings.table_parts
    pg = engine.dialect.name == "postgresql"
    return Table(
        name,
        MetaData(schema=schema),
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("session_id", String(36), nullable=False),
        Column("user_id", String(64)),
        Column("role", String(16), nullable=False),
        Column("message", Text),
        Column("model", String(64)),
        Column("prompt_tokens", Integer),
        Column("completion_tokens", Integer),
        Column("meta", JSONB if pg else JSON),
        Column(settings.timestamp_column, DateTime(timezone=True), nullable=False, index=True),
        # SQLite would otherwise reuse the key of a deleted newest row, and a restore
        # (which skips keys already present) could then skip an archived row.
        sqlite_autoincrement=True,
    )


def fake_rows(n: int, days: int, *, now: datetime, seed: int, ts_name: str = "created_at") -> Iterator[dict[str, Any]]:
    """``n`` chat rows with timestamps spread uniformly over the last ``days`` days."""
    rnd = random.Random(seed)
    span = timedelta(days=days).total_seconds()
    session = str(uuid.UUID(int=rnd.getrandbits(128)))
    for i in range(n):
        if i % 6 == 0:
            session = str(uuid.UUID(int=rnd.getrandbits(128)))
        role = "user" if i % 2 == 0 else "assistant"
        pool = (KOREAN if rnd.random() < 0.6 else ENGLISH) if role == "user" else ASSISTANT
        msg = " ".join(rnd.choice(pool) for _ in range(rnd.randint(1, 4)))
        if rnd.random() < 0.01:
            msg = ""  # an empty message is not a missing one
        elif rnd.random() < 0.01:
            msg = None
        model = None if role == "user" else rnd.choice(MODELS)
        yield {
            "session_id": session,
            "user_id": None if rnd.random() < 0.05 else f"user-{rnd.randint(1, 500)}",
            "role": role,
            "message": msg,
            "model": model,
            "prompt_tokens": rnd.randint(5, 800) if model else None,
            "completion_tokens": rnd.randint(5, 1200) if model else None,
            "meta": None if rnd.random() < 0.1 else {"client": rnd.choice(["web", "ios", "android"]),
                                                      "lang": rnd.choice(["ko", "en"]),
                                                      "latency_ms": rnd.randint(80, 4000)},
            ts_name: now - timedelta(seconds=rnd.random() * span),
        }


def demo_data(settings: Settings, *, rows: int = 5000, days: int = 90, seed: int = 42) -> DemoDataResult:
    """Create the log table if missing and insert ``rows`` realistic rows over ``days`` days.

    Side effects: may create the table (with an index on the timestamp column) and
    inserts rows. Raises BadSetting for bad numbers, DatabaseUnavailable.
    """
    if rows < 0 or rows > 50_000_000:
        raise BadSetting("--rows", rows, "must be between 0 and 50000000")
    if days < 1 or days > 36_500:
        raise BadSetting("--days", days, "must be between 1 and 36500")
    engine = check_connection(settings)
    table = log_table(settings, engine)
    schema, name = settings.table_parts
    created = not inspect(engine).has_table(name, schema=schema)
    if created:
        table.metadata.create_all(engine)
        log.info("created table %s", settings.table)
    now = utcnow()
    inserted = 0
    chunk: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for row in fake_rows(rows, days, now=now, seed=seed, ts_name=settings.timestamp_column):
            if engine.dialect.name == "sqlite":
                row[settings.timestamp_column] = row[settings.timestamp_column].replace(tzinfo=None)
            chunk.append(row)
            if len(chunk) >= 5000:
                conn.execute(table.insert(), chunk)
                inserted += len(chunk)
                chunk = []
        if chunk:
            conn.execute(table.insert(), chunk)
            inserted += len(chunk)
    log.info("inserted %d demo rows into %s", inserted, settings.table)
    return DemoDataResult(settings.table, inserted, created, now - timedelta(days=days), now)
