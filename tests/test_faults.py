"""The fault-injection suite: every case of docs/reliability.md, run as a test.

The cases live in ``scripts/fault_cases*.py`` (the script that writes the table of
docs/reliability.md); here each one must end without a traceback, without a wrong
result and without changing any file the user made.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fault_cases  # noqa: E402

CASES = fault_cases.load_cases()


@pytest.mark.parametrize("item", CASES, ids=[f"{c.number}-{c.cls}" for c in CASES])
def test_fault_case(item: fault_cases.Case) -> None:
    result = fault_cases.run_case(item)
    assert not result.traceback, result.outcome
    assert not result.wrong, result.outcome
    assert not result.lost, f"files changed: {result.lost} ({result.outcome})"


def test_every_class_of_the_issue_has_cases_and_there_are_at_least_60() -> None:
    assert len(CASES) >= 60
    assert {c.cls for c in CASES} >= {1, 2, 4, 5, 6, 7, 8}


def test_the_documented_table_lists_every_case() -> None:
    doc = (ROOT / "docs" / "reliability.md").read_text()
    missing = [c.tried for c in CASES if f"| {c.tried} |" not in doc]
    assert not missing, f"run scripts/fault_cases.py --write docs/reliability.md: {missing}"


def test_a_broken_write_is_caught_by_the_suite(tmp_path) -> None:
    """The harness itself: a case that changes a protected file is counted as data lost."""

    def destroys(ctx: fault_cases.Ctx) -> str:
        path = ctx.folder / "user.txt"
        path.write_text("mine")
        ctx.protect(path)
        path.write_text("gone")
        return "wrote over it"

    def crashes(ctx: fault_cases.Ctx) -> str:
        raise IndexError("boom")

    lost = fault_cases.run_case(fault_cases.Case(0, 1, "destroys", destroys))
    crash = fault_cases.run_case(fault_cases.Case(0, 1, "crashes", crashes))
    assert lost.lost == ["user.txt"] and not lost.ok
    assert crash.traceback and not crash.ok
