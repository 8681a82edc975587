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
    assert "bash scripts/setup.sh && bash scripts/test.sh" in readme
    assert "bash scripts/setup.sh && bash scripts/test.sh" in ci
    runner = (REPO / "scripts" / "test.sh").read_text()
    for tier in ("unit", "integration", "vm"):  # every tier, none left out
        assert f".venv/bin/pytest tests/{tier} " in runner, tier


def test_the_package_ships_no_test_double():
    """The wizard's recorded-facts engine is for the tests: it lives in tests/, not in the wheel."""
    shipped = [p.relative_to(REPO) for p in (REPO / "rescue").rglob("*.py") if "RecordedEngine" in p.read_text()]
    assert shipped == [] or all("class RecordedEngine" not in (REPO / p).read_text() for p in shipped), shipped
    assert not (REPO / "rescue" / "tui" / "recorded.py").exists()
    assert (TESTS / "unit" / "recorded_engine.py").is_file()


FACES = ("commands", "tui", "drill")  # what collects answers and draws events


def _calls_and_imports(path: Path) -> tuple[set[str], set[str]]:
    import ast

    tree = ast.parse(path.read_text(), str(path))
    calls, imports = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            calls.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
        elif isinstance(node, ast.Import):
            imports.update(a.name for a in node.names)
    return calls, imports


def test_no_face_builds_its_own_executor_or_plan():
    """rescue restore, the wizard and the drill run restores through rescue.engine.restore, so their
    options and refusals cannot drift apart again (issue 16)."""
    found = []
    for face in FACES:
        for path in sorted((REPO / "rescue" / face).rglob("*.py")):
            calls, _ = _calls_and_imports(path)
            found += [f"{path.relative_to(REPO)}: {name}()" for name in sorted(calls & {"Executor", "Plan", "build_plan"})]
    assert found == []


def test_the_drill_imports_no_command_module():
    found = []
    for path in sorted((REPO / "rescue" / "drill").rglob("*.py")):
        _, imports = _calls_and_imports(path)
        found += [f"{path.relative_to(REPO)}: {m}" for m in sorted(imports)
                  if m == "rescue.commands" or m.startswith("rescue.commands.") or m == "rescue.cli"]
    assert found == []
