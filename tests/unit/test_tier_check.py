"""The tier check in tests/conftest.py cannot be walked around.

Each case runs pytest in a throwaway project that carries a copy of the real
tests/conftest.py and one small test per tier, and reads its exit status and
its TIER CHECK lines.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
PASSING = "def test_ok():\n    assert 1 + 1 == 2\n"


def project(tmp_path: Path, **tiers: str) -> Path:
    """tests/{unit,integration,vm}/test_TIER.py with the given bodies (a passing test by default)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    for tier in ("unit", "integration", "vm"):
        d = tmp_path / "tests" / tier
        d.mkdir(parents=True, exist_ok=True)
        (d / f"test_{tier}.py").write_text("import pytest\n" + tiers.get(tier, PASSING))
    shutil.copy(CONFTEST, tmp_path / "tests" / "conftest.py")
    return tmp_path


def pytest_in(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                          cwd=root, capture_output=True, text=True, timeout=120)


def test_all_tiers_green_passes(tmp_path: Path) -> None:
    r = pytest_in(project(tmp_path), "tests")
    assert r.returncode == 0, r.stdout
    assert "TIER CHECK FAILED" not in r.stdout


@pytest.mark.parametrize("args, tier", [
    (("tests", "-m", "not slow"), "vm"),  # the vm tier's only test is slow: deselected
    (("tests", "-k", "not in_vm"), "vm"),
    (("tests", "-k", "unit_only"), "integration"),
])
def test_deselecting_a_whole_tier_fails(tmp_path: Path, args: tuple[str, ...], tier: str) -> None:
    root = project(tmp_path, vm="@pytest.mark.slow\ndef test_in_vm():\n    assert True\n",
                   unit="def test_unit_only():\n    assert True\n")
    r = pytest_in(root, *args)
    assert r.returncode != 0, r.stdout
    assert f"TIER CHECK FAILED: tier {tier}: no test ran" in r.stdout


@pytest.mark.parametrize("body, words", [
    ("pytest.skip('no qemu', allow_module_level=True)\n", "skipped"),
    ("pytest.importorskip('a_module_that_is_not_there')\n", "skipped"),
    ("@pytest.mark.skipif(True, reason='x')\ndef test_s():\n    pass\n" + PASSING, "skipped"),
    ("@pytest.fixture\ndef f():\n    pytest.skip('no loop devices')\n"
     "def test_f(f):\n    pass\n" + PASSING, "skipped"),
    ("@pytest.mark.xfail(reason='known')\ndef test_x():\n    assert False\n" + PASSING, "xfail"),
    ("@pytest.mark.xfail(reason='known')\ndef test_x():\n    assert True\n" + PASSING, "xfail"),
])
def test_a_tier_that_skips_or_xfails_fails(tmp_path: Path, body: str, words: str) -> None:
    root = project(tmp_path, integration=body)
    # a green module beside it: only the skip or xfail can fail the check
    (root / "tests" / "integration" / "test_green.py").write_text(PASSING)
    r = pytest_in(root, "tests")
    assert r.returncode != 0, r.stdout
    assert "TIER CHECK FAILED: tier integration" in r.stdout and words in r.stdout


def test_asking_for_one_tier_checks_only_that_tier(tmp_path: Path) -> None:
    root = project(tmp_path, vm="pytest.skip('no qemu', allow_module_level=True)\n",
                   unit="def test_unit_only():\n    assert True\ndef test_other():\n    assert True\n")
    r = pytest_in(root, "tests/unit", "-k", "unit_only")
    assert r.returncode == 0, r.stdout
    r = pytest_in(root, "tests/unit", "-k", "nothing_matches")
    assert r.returncode != 0 and "tier unit: no test ran" in r.stdout
