"""`rescue list --health` / `--check` over a real dirvish bank of three nights.

A demo machine (loop disk, real mkfs) is backed up by the unmodified dirvish
(in a private mount namespace, see rescue.demo.dirvish) with `rescue capture`
as its post-server hook. Between nights one file of /home changes, one is
added and one stays the same; the hook's rescue/added.json must count exactly
the new inodes, and --health and --check must report from those files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import rescue
from rescue.backups.health import ADDED_FILE
from rescue.cli import main
from rescue.commands.list import CHECK_PROBLEMS
from rescue.demo import DemoMachine, make_bank
from rescue.demo.dirvish import default_image_names, rescue_command, run_dirvish
from rescue.errors import Exit


def added(image: Path) -> dict:
    return json.loads((image / "rescue" / ADDED_FILE).read_text())


def expected_inodes(image: Path, new_files: int) -> int:
    """Folders are made anew every night; outside tree/ everything is this image's own;
    plus the files of tree/ that rsync wrote anew. added.json itself came after the measure."""
    dirs = sum(len(d) for _, d, _ in os.walk(image / "tree")) + 1  # tree/ itself
    own = sum(len(d) + len(f) for r, d, f in os.walk(image) if not r.startswith(str(image / "tree"))) - 1
    return 1 + dirs + own + new_files  # 1: the image folder


def write(path: Path, data: bytes, night: int) -> None:
    """Each night's write gets its own mtime: rsync's quick check (size and mtime) would
    otherwise take a same-size file rewritten within the same second as unchanged and link it."""
    path.write_bytes(data)
    when = 1_700_000_000 + night * 86_400
    os.utime(path, (when, when))


def test_health_and_check_over_three_real_nights(tmp_path, capsys):
    names = default_image_names(3)
    with DemoMachine(tmp_path / "m", corpus=False) as m:
        home = m.dir_of("/home")
        write(home / "changed", b"1" * 40_000, 0)
        write(home / "same", b"s" * 50_000, 0)
        # the hook is this checkout's rescue (the gateway's fixed environment drops PYTHONPATH)
        hook = ["env", f"PYTHONPATH={Path(rescue.__file__).parents[1]}", *rescue_command(),
                "capture", "--disk", m.disk, "--root", str(m.root)]
        bank = make_bank(m, tmp_path / "bank", images=names[:1], hook_argv=hook)

        def nightly(name: str) -> None:
            when = dt.datetime.strptime(name, "%Y-%m%d-%H%M").strftime("%Y-%m-%d %H:%M:%S")
            for vault, _ in bank.vaults:
                run_dirvish(bank.confdir, ["dirvish", "--vault", vault, "--image", name, "--image-time", when])

        write(home / "changed", b"2" * 40_000, 1)
        write(home / "added", b"a" * 70_000, 1)
        nightly(names[1])
        write(home / "changed", b"3" * 40_000, 2)
        nightly(names[2])

        vault = bank.vault_of("/home")
        first, second, third = (bank.image_dir(vault, n) for n in names)
        t2, t3 = second / "tree", third / "tree"
        assert os.stat(t3 / "same").st_nlink == 3 and os.stat(t3 / "added").st_nlink == 2  # linked, not new
        assert os.stat(t3 / "changed").st_nlink == 1

        a1, a2, a3 = added(first), added(second), added(third)
        assert a1["reference"] is None and a2["reference"] == names[0] and a3["reference"] == names[1]
        assert a2["inodes"] == expected_inodes(second, 2)  # changed, added
        assert a3["inodes"] == expected_inodes(third, 1)  # changed
        assert a2["inodes"] - a3["inodes"] in (0, 1, 2)  # the second night added one file more
        # bytes: the new files' blocks and the folders' and the image's own small files, never `same`
        floor2 = sum(os.lstat(t2 / f).st_blocks * 512 for f in ("changed", "added"))
        floor3 = os.lstat(t3 / "changed").st_blocks * 512
        assert floor2 <= a2["bytes"] < floor2 + 2 * 1024 * 1024
        assert floor3 <= a3["bytes"] < floor3 + 2 * 1024 * 1024
        assert a3["bytes"] < a2["bytes"] and a1["bytes"] > 50_000  # the first night copied everything

        # --health: the same figures, summed per night over the vaults; growth skips the full first night
        assert main(["list", "--bank", str(bank.bank), "--health", "--json"]) == Exit.OK
        data = json.loads(capsys.readouterr().out)
        [b] = data["banks"]
        per_night = [sum(added(bank.image_dir(v, n))["bytes"] for v, _ in bank.vaults) for n in names]
        assert [n["bytes"] for n in b["nights"]] == per_night
        assert b["growth_bytes"] == (per_night[1] + per_night[2]) // 2
        last = {(x["vault"], x["image"]): x for x in b["nights"][2]["images"]}
        assert last[(vault, names[2])]["bytes"] == a3["bytes"] and last[(vault, names[2])]["inodes"] == a3["inodes"]
        assert len(last) == len(bank.vaults)
        fs = os.statvfs(bank.bank)
        assert b["size"] == fs.f_blocks * fs.f_frsize and b["inodes"] == fs.f_files
        assert b["unmeasured"] == 0 and b["nights_left"] > 0
        [machine] = data["machines"]
        assert machine["layout"] is True and machine["failed"] == 0 and machine["unheld"] == []
        assert machine["age_days"] < 2

        assert main(["list", "--bank", str(bank.bank), "--health"]) == Exit.OK
        text = capsys.readouterr().out
        assert re.search(r"growth per night: .*; nights left: \d", text)

        # --check: all well, then each threshold missed
        assert main(["list", "--bank", str(bank.bank), "--check", "--max-age", "2d", "--max-used", "100%"]) == Exit.OK
        capsys.readouterr()
        assert main(["list", "--bank", str(bank.bank), "--check", "--min-nights", "1e15", "--max-used", "0%"]) \
            == CHECK_PROBLEMS
        out = capsys.readouterr().out.splitlines()
        assert any("under --min-nights 1e+15" in line for line in out)
        assert any(line.startswith(f"bank {bank.bank.resolve()}: ") and "over --max-used 0%" in line for line in out)

        # a stale bank: every image's summary says it was made 12 days earlier
        for v, _ in bank.vaults:
            for n in names:
                s = bank.image_dir(v, n) / "summary"
                text = s.read_text()
                now = re.search(r"^Image-now: (.*)$", text, re.M).group(1)
                old = dt.datetime.strptime(now, "%Y-%m-%d %H:%M:%S") - dt.timedelta(days=12)
                s.write_text(text.replace(f"Image-now: {now}", f"Image-now: {old:%Y-%m-%d %H:%M:%S}"))
        assert main(["list", "--bank", str(bank.bank), "--check", "--max-age", "2d"]) == CHECK_PROBLEMS
        [line] = capsys.readouterr().out.splitlines()
        assert re.fullmatch(rf"machine {bank.client}: newest usable image \w+/{names[2]} is 1[12]\.\d days old, "
                            r"over --max-age 2d", line), line
