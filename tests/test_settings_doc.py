"""The README's configuration table documents exactly the declared settings, with their defaults."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from core.config import SPECS, Settings
from tests.support import ROOT

README = ROOT / "README.md"
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|")


def documented() -> dict[str, str]:
    """Variable -> default cell of every row in the README's "## Configuration" table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return {m[1]: m[2].strip() for m in map(ROW.match, section.splitlines()) if m}


def shown_default(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def test_every_setting_is_in_the_readme():
    missing = {spec.env for spec in SPECS.values()} - set(documented())
    assert not missing, f"add these settings to README.md's Configuration table: {sorted(missing)}"


def test_the_readme_lists_no_setting_that_does_not_exist():
    unknown = set(documented()) - {spec.env for spec in SPECS.values()}
    assert not unknown, f"README.md's Configuration table lists settings that do not exist: {sorted(unknown)}"


@pytest.mark.parametrize("f", fields(Settings), ids=lambda f: f.name)
def test_the_readme_shows_each_default(f):
    assert documented()[SPECS[f.name].env] == shown_default(f.default)
