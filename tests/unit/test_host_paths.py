"""No test reads the host's dirvish config or restore state (issue 14, point 10(b)).

tests/conftest.py points rescue.paths at the session's own folders. Proven
here where it matters: in a throwaway mount namespace (the host's /etc and
/var/lib are overlaid, nothing written to them), a master.conf with a bank and
an unfinished restore are planted exactly where rescue reads by default; the
defaults do see them, and a test run still finds "No bank found" and no
restore to resume.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from rescue.paths import ENV, host_paths

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent

PLANT_AND_CHECK = textwrap.dedent('''
    import json, os, shutil, subprocess, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1] + "/unit")
    from test_backups_dirvish import make_image
    from rescue.engine.executor import step_record
    from rescue.engine.journal import Journal, plan_digest
    from rescue.plan.model import Plan
    from rescue.tui.real import RealEngine

    tmp, tests = Path(sys.argv[2]), Path(sys.argv[1])
    bank = tmp / "bank"
    make_image(bank, "root", "2026-1125-0300", tree="/", layout=True)
    Path("/etc/dirvish").mkdir(exist_ok=True)
    Path("/etc/dirvish/master.conf").write_text(f"bank:\\n\\t{bank}\\n")
    plan_text = (tests / "unit/data/tui/plans/loop10.json").read_text()
    plan = Plan.from_json(json.loads(plan_text))
    folder = Path("/var/lib/rescue/dev_loop10")
    folder.mkdir(parents=True, exist_ok=True)  # a host may hold this disk's journal already
    (folder / "plan.json").write_text(plan_text)
    journal = Journal(path=folder / "journal.json", digest=plan_digest([step_record(s) for s in plan.steps]),
                      target="/dev/loop10", runs=1)
    journal.steps[plan.steps[0].key] = {"state": "started", "attempts": 1}   # killed in its first step
    journal.save()

    test_env = dict(os.environ)
    host_env = {k: v for k, v in os.environ.items() if not k.startswith("RESCUE_")}
    os.environ.clear(); os.environ.update(host_env)
    seen = RealEngine()
    assert [m.client for m in seen.discover().machines] == ["vm"], "the planted master.conf is not read by default"
    assert seen.interrupted() is not None, "the planted journal is not offered by default"
    os.environ.clear(); os.environ.update(test_env)
    ours = RealEngine()
    assert ours.discover().machines == () and ours.interrupted() is None
    wizard = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp / "inner"),
         str(tests / "unit/test_tui_wizard.py") + "::test_backups_screen_without_any_bank_says_what_to_do"],
        env=host_env, cwd=tests.parent, capture_output=True, text=True)
    assert wizard.returncode == 0, wizard.stdout[-3000:] + wizard.stderr[-2000:]
    print("CHECKED", wizard.stdout.strip().splitlines()[-1])
''')

NAMESPACE = textwrap.dedent('''
    set -e
    for d in /etc /var/lib; do
        mkdir -p "$1/upper$d" "$1/work$d"
        mount -t overlay overlay -o "lowerdir=$d,upperdir=$1/upper$d,workdir=$1/work$d" "$d"
    done
    shift
    exec "$@"
''')


def test_the_session_points_every_host_path_at_its_own_folders():
    paths = host_paths()
    for field, (var, default) in ENV.items():
        assert os.environ.get(var), var
        assert str(getattr(paths, field)) != default, field
    assert host_paths({}).state_dir == Path("/var/lib/rescue")  # what the rescue system uses
    assert host_paths({"RESCUE_STATE_DIR": "/x"}).state_dir == Path("/x")


def test_a_planted_master_conf_and_unfinished_journal_are_not_read(tmp_path):
    script = tmp_path / "plant_and_check.py"
    script.write_text(PLANT_AND_CHECK)
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]  # a mount namespace of our own
    proc = subprocess.run(
        ["unshare", *user, "--mount", "--propagation", "private", "bash", "-c", NAMESPACE, "ns", str(tmp_path),
         sys.executable, str(script), str(TESTS), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "CHECKED 1 passed" in proc.stdout, proc.stdout
    # what was planted went into the overlay's upper folders, not into the host's /etc and /var/lib
    assert (tmp_path / "upper/etc/dirvish/master.conf").is_file()
    assert (tmp_path / "upper/var/lib/rescue/dev_loop10/journal.json").is_file()
