"""Shared test rules: every tier that was asked for must really run.

A tier (tests/unit, tests/integration, tests/vm) whose folder lies within
what pytest was asked to run fails the whole run unless at least one of its
tests passed and none was skipped or xfailed, whatever the options: a `-k`
or `-m` that deselects a whole tier, a module-level skip or importorskip, a
skip in a fixture, an xfail, each counts. A tier that cannot run must say so
loudly, never pass by skipping. Only --collect-only (which runs nothing by
design) is exempt.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "vm")

_outcomes: dict[str, Counter[str]] = {t: Counter() for t in TIERS}


def _tier(nodeid: str) -> str | None:
    parts = Path(nodeid.split("::")[0]).parts
    for t in TIERS:
        if "tests" in parts and t in parts:
            return t
    return None


def _requested(config: pytest.Config) -> set[str]:
    """Tiers whose folder lies within what pytest was asked to run."""
    args = [a.split("::")[0] for a in config.args] or [str(TESTS)]
    wanted: set[str] = set()
    for a in args:
        p = Path(a)
        p = (Path(config.invocation_params.dir) / p).resolve() if not p.is_absolute() else p.resolve()
        for t in TIERS:
            tier_dir = TESTS / t
            if p == tier_dir or tier_dir in p.parents or p in tier_dir.parents or p == TESTS:
                # a single file or test inside a tier counts as asking for that tier
                wanted.add(t)
    return wanted


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tier = _tier(report.nodeid)
    if tier is None:
        return
    if hasattr(report, "wasxfail"):
        _outcomes[tier]["xfailed"] += 1  # an expected failure (or xpass) is not a test that ran green
    elif report.skipped:
        _outcomes[tier]["skipped"] += 1
    elif report.when == "call" and report.passed:
        _outcomes[tier]["passed"] += 1
    if report.failed:
        _outcomes[tier]["failed"] += 1


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A module that skips itself (pytest.skip(allow_module_level=True), importorskip) is a skip too."""
    tier = _tier(report.nodeid)
    if tier is not None and report.skipped:
        _outcomes[tier]["skipped"] += 1


def tier_problems(requested: set[str], outcomes: dict[str, Counter[str]]) -> list[str]:
    problems = []
    for tier in sorted(requested):
        c = outcomes[tier]
        if c["skipped"]:
            problems.append(f"tier {tier}: {c['skipped']} test(s) or module(s) skipped; a tier must run, not skip")
        if c["xfailed"]:
            problems.append(f"tier {tier}: {c['xfailed']} test(s) marked xfail; fix them or let them fail")
        if c["passed"] == 0 and c["failed"] == 0:
            problems.append(f"tier {tier}: no test ran (deselected by -k/-m, or none collected)")
    return problems


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.option.collectonly or hasattr(session.config, "workerinput"):
        return  # an xdist worker sees only its share; the controller gets every report and checks
    problems = tier_problems(_requested(session.config), _outcomes)
    if problems:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line("")
            for p in problems:
                tr.write_line(f"TIER CHECK FAILED: {p}", red=True)
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ---------------------------------------------------------------------------------------------
# Host paths (issue 14, point 10(b)): no test reads this machine's dirvish config or restore
# state. Every default host path rescue reads comes from rescue.paths; for the whole session
# they point at folders of the session's own (set in the environment, so the rescue processes
# tests start see them too). Not redirected, on purpose: the disk lock (/run/rescue/locks) and
# the write-behind note (/run/rescue-write-behind): they guard this machine's real disks and
# vm.dirty_* settings, so a test restore and a real one must see each other there.


@pytest.fixture(scope="session", autouse=True)
def _rescue_host_paths(tmp_path_factory: pytest.TempPathFactory):
    from rescue.paths import ENV

    top = tmp_path_factory.mktemp("host-paths")
    with pytest.MonkeyPatch.context() as mp:
        for var, default in ENV.values():
            mp.setenv(var, str(top / default.strip("/")))
        yield top


# ---------------------------------------------------------------------------------------------
