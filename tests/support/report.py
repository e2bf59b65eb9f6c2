"""The fault suite's numbers: counts per scenario and database, printed in the terminal summary."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

SEED = int(os.environ.get("LRC_FAULT_SEED", "20260131"))
KILL_TRIALS = int(os.environ.get("LRC_KILL_TRIALS", "25"))


@dataclass
class Stats:
    """Counts of one scenario on one database."""

    name: str
    trials: int = 0
    killed: int = 0
    finished_first: int = 0
    rows_checked: int = 0
    rows_lost: int = 0
    rows_deleted_before_fault: int = 0
    slowest_s: float = 0.0
    slowest_id: str = ""
    total_s: float = 0.0
    phases: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    phase_label: str = "outcomes"

    def add(self, trial_id: str, seconds: float) -> None:
        self.trials += 1
        self.total_s += seconds
        if seconds > self.slowest_s:
            self.slowest_s, self.slowest_id = seconds, trial_id

    def lines(self) -> list[str]:
        head = f"{self.name}: {self.trials} trials"
        if self.killed or self.finished_first:
            head += f" ({self.killed} struck mid-run, {self.finished_first} finished before the fault)"
        head += f", {self.rows_checked:,} rows checked, {self.rows_lost} rows lost"
        if self.rows_deleted_before_fault:
            head += f", {self.rows_deleted_before_fault:,} rows deleted by batches committed before the fault"
        head += f"; slowest trial {self.slowest_s:.2f} s ({self.slowest_id}), total {self.total_s:.1f} s"
        out = [head]
        if self.phases:
            out.append(f"    {self.phase_label}: " + ", ".join(f"{k} {v}" for k, v in self.phases.most_common()))
        out += [f"    {n}" for n in self.notes]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "trials": self.trials, "killed": self.killed, "finished_first": self.finished_first,
                "rows_checked": self.rows_checked, "rows_lost": self.rows_lost,
                "rows_deleted_before_fault": self.rows_deleted_before_fault, "slowest_s": round(self.slowest_s, 3),
                "slowest_trial": self.slowest_id, "total_s": round(self.total_s, 1), "phases": dict(self.phases),
                "notes": self.notes}


class StatsBook:
    """The :class:`Stats` of several scenarios, by key, in the order first used."""

    def __init__(self, phase_label: str = "outcomes") -> None:
        self.phase_label = phase_label
        self.by_key: dict[str, Stats] = {}

    def get(self, key: str, name: str | None = None) -> Stats:
        """The stats of ``key`` (shown as ``name``, default the key), made on first use."""
        return self.by_key.setdefault(key, Stats(name or key, phase_label=self.phase_label))

    def all(self) -> list[Stats]:
        return list(self.by_key.values())


def write_summary(config: pytest.Config, title: str, stats: list[Stats]) -> None:
    """Print the numbers in the terminal summary area (also without -s); save them to
    $LRC_FAULT_STATS (a JSON lines file) when set."""
    stats = [s for s in stats if s.trials]
    if not stats:
        return
    lines = [f"=== {title} (seed {SEED}, LRC_KILL_TRIALS={KILL_TRIALS}) ==="]
    for s in stats:
        lines += s.lines()
    tr = config.pluginmanager.getplugin("terminalreporter")
    capman = config.pluginmanager.getplugin("capturemanager")
    if tr is not None:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                tr.write_line("")
                for line in lines:
                    tr.write_line(line)
        else:
            for line in lines:
                tr.write_line(line)
    target = os.environ.get("LRC_FAULT_STATS")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            for s in stats:
                f.write(json.dumps({"title": title, "seed": SEED, **s.as_dict()}) + "\n")
