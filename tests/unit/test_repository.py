"""Promises about the repository itself that CI would otherwise find late."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


def test_test_modules_have_unique_names_across_tiers():
    # pytest imports test modules by basename: a clash stops the whole run.
    names = Counter(p.name for p in TESTS.glob("*/test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []


def test_readme_quick_start_has_the_two_commands_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh && .venv/bin/rescue drill" in readme
    assert "bash scripts/setup.sh && .venv/bin/pytest" in readme
    assert "bash scripts/setup.sh && .venv/bin/pytest" in ci


def test_the_package_ships_no_test_double():
    """The wizard's recorded-facts engine is for the tests: it lives in tests/, not in the wheel."""
    shipped = [p.relative_to(REPO) for p in (REPO / "rescue").rglob("*.py") if "RecordedEngine" in p.read_text()]
    assert shipped == [] or all("class RecordedEngine" not in (REPO / p).read_text() for p in shipped), shipped
    assert not (REPO / "rescue" / "tui" / "recorded.py").exists()
    assert (TESTS / "unit" / "recorded_engine.py").is_file()
