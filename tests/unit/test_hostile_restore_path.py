"""A hostile bank through the whole path: rescue list, rescue plan, rescue restore --dry-run, restore.sh.

Names an attacker or a bad disk could leave (vaults, images, the client, mount
points and labels in layout.json) hold newlines, quotes, `..`, spaces, `$(...)`
and backticks. Every payload writes a canary file if a shell ever evaluates
it. The checks:
- no command rescue runs, and no line of restore.sh, evaluates a payload;
- restore.sh passes `bash -n`, and, run under bash with every outside command
  replaced by a logger, hands each odd name to mkfs, mount and cp as one
  intact word (so nothing is split, globbed or expanded);
- a link in the bank pointing outside it is never read, and --dry-run writes
  nothing anywhere.

The target's facts are given as data (probing a block device needs root; the
integration tier probes real loop disks), everything else is the real code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from plan_fixtures import GIB, MIB, layout as fixture_layout  # noqa: E402

import rescue.probe  # noqa: E402
from rescue.cli import main  # noqa: E402
from rescue.layout.model import Filesystem, FstabEntry, RootMeta  # noqa: E402
from rescue.target import TargetDisk  # noqa: E402

SUMMARY = (Path(__file__).parent / "fixtures" / "dirvish" / "summary.success").read_text()


CANARY = "PWNED"  # a file any evaluated payload creates in its working folder (names hold no slash)


def payloads() -> dict[str, str]:
    c = CANARY
    return {
        "subst": f"$(echo PWNED >>{c})",
        "back": f"`echo PWNED >>{c}`",
        "quote": f"it's \"$(echo PWNED >>{c})\"",
        "newline": f"x\necho PWNED >>{c}\n#",
        "semi": f"a;echo PWNED >>{c};b",
        "space": "two  words *",
    }


def hostile_bank(tmp: Path):
    """A bank whose vault, image and client names, mount points and labels are all payloads."""
    p = payloads()
    client = "vm" + p["subst"]
    home_mp = "/srv/" + p["space"] + "/" + p["back"]  # a mount point from layout.json
    vaults = {"/": "root" + p["newline"], "/home": "home " + p["quote"], home_mp: ".." + p["semi"]}
    image_name = "2026-1126-0300 " + p["back"]
    base = fixture_layout("old")
    fss = []
    for fs in base.filesystems:
        mp = {"/home": home_mp}.get(fs.mountpoint, fs.mountpoint)
        fss.append(dataclasses.replace(fs, mountpoint=mp, label=("l'" + p["subst"])[:16] if mp == "/" else fs.label,
                                       root=RootMeta(mp, 0o755, 0, 0) if mp else None))
    fss.append(Filesystem("/dev/sda4", "ext4", uuid="00000009-1111-4222-8333-000000000009", label="h",
                          mountpoint="/home", used=10 * MIB, root=RootMeta("/home", 0o755, 0, 0)))
    disk = base.disks[0]
    extra = dataclasses.replace(disk.table.partitions[-1], node="/dev/sda4",
                                start=disk.table.partitions[-1].start + disk.table.partitions[-1].size,
                                size=64 * MIB // 512)
    disk = dataclasses.replace(disk, table=dataclasses.replace(disk.table, partitions=(*disk.table.partitions, extra)))
    lay = dataclasses.replace(base, client=client, hostname=client, disks=(disk,), filesystems=tuple(fss),
                              fstab=tuple(FstabEntry(f"UUID={f.uuid}", f.mountpoint or "none", f.fstype) for f in fss))
    bank = tmp / "bank"
    outside = tmp / "outside"
    (outside / "secret").mkdir(parents=True)
    (outside / "secret" / "passwd").write_text("stolen\n")
    for mp, vault in vaults.items():
        image = bank / vault / image_name
        (image / "tree").mkdir(parents=True)
        (image / "tree" / "file").write_text("data\n")
        os.symlink(outside / "secret", image / "tree" / "escape")  # data in the tree, never followed
        summary = (SUMMARY.replace("client: vm", f"client: {client}").replace("vault: home", f"vault: {vault}")
                   .replace("tree: /backup/demo/src", f"tree: {mp}").replace("Image: 2026-1126-0300",
                                                                            f"Image: {image_name}"))
        summary = summary.replace("Image-now: 2026-11-26 10:48:08", "Image-now: 2026-11-26 03:00:00")
        (image / "summary").write_text(summary.replace("\n" + vault.split("\n")[0], "\n" + vault))
        if mp == "/":
            (image / "rescue").mkdir()
            (image / "rescue" / "layout.json").write_text(lay.dumps())
    os.symlink(outside, bank / "escape-vault")  # a vault that is a link out of the bank
    return bank, client, lay, vaults


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    bank, client, lay, vaults = hostile_bank(tmp_path)
    disk = tmp_path / "sdz"  # stands in for /dev/sdz; its facts are data (see the module docstring)
    disk.write_bytes(b"")
    facts = TargetDisk(device=str(disk), size=8 * GIB, model="NEW DISK", serial="N1")
    monkeypatch.setattr(rescue.probe, "probe_disk", lambda device, backup_sources=(): facts)
    monkeypatch.chdir(tmp_path)  # a relative payload would land here
    before = snapshot(tmp_path)
    return {"tmp": tmp_path, "bank": bank, "client": client, "layout": lay,
            "vaults": vaults, "disk": disk, "before": before}


def evaluated(top: Path) -> list[Path]:
    """Canary files anywhere under `top`: proof that some shell evaluated a payload."""
    return list(top.rglob(CANARY))


def snapshot(top: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            out[os.path.join(dirpath, n)] = (st.st_mtime_ns, st.st_size)
    return out


def test_list_plan_and_dry_run_evaluate_nothing_and_write_nothing(hostile, capsys):
    h = hostile
    assert main(["list", "--bank", str(h["bank"])]) == 0
    out = capsys.readouterr().out
    for line in out.splitlines():
        assert line.isprintable()
    assert "stolen" not in out

    assert main(["plan", "--bank", str(h["bank"]), "--client", h["client"], "--target", str(h["disk"]), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["client"] == h["client"]

    code = main(["restore", "--bank", str(h["bank"]), "--client", h["client"], "--target", str(h["disk"]),
                 "--dry-run", "--state-dir", str(h["tmp"] / "state")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "nothing was written" in out
    assert not evaluated(h["tmp"])
    assert snapshot(h["tmp"]) == h["before"], "a dry run wrote into the tmp folder"
    assert not (h["tmp"] / "state").exists()
    assert "stolen" not in out + err


def render(h, capsys) -> str:
    script = h["tmp"] / "out" / "restore.sh"
    script.parent.mkdir()
    assert main(["plan", "--bank", str(h["bank"]), "--client", h["client"], "--target", str(h["disk"]),
                 "--script", str(script)]) == 0
    capsys.readouterr()
    return script.read_text()


def test_restore_sh_parses_and_keeps_every_payload_quoted(hostile, capsys):
    text = render(hostile, capsys)
    r = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # every payload sits inside single quotes, a comment or a quoted here-document: never where bash expands
    states = quoting(text)
    at = [i for i in range(len(text)) if text.startswith("echo PWNED", i)]
    assert at, "the payloads are in the script (as data)"
    for i in at:
        line = text[text.rfind("\n", 0, i) + 1:text.find("\n", i)]
        assert states[i] in ("single", "comment", "heredoc"), f"payload {states[i]}: {line}"


def quoting(text: str) -> list[str]:
    """For each character of a bash script: plain, single, double, comment or heredoc (quoted <<'END').

    Enough of bash's rules for what restore.sh uses ($(...) inside double quotes starts plain
    quoting again); an unknown construct shows up as plain or double, which the test treats
    as unsafe."""
    out: list[str] = []
    stack = ["plain"]  # "plain" (top level or inside $(...)) or "double"
    i, heredoc = 0, None
    while i < len(text):
        ch, top = text[i], stack[-1]
        if heredoc is not None:
            line_end = text.find("\n", i)
            line_end = len(text) if line_end < 0 else line_end
            if text[i:line_end] == heredoc:
                heredoc = None
            out.extend(["heredoc"] * (line_end + 1 - i))
            i = line_end + 1
            continue
        if ch == "\\":
            out.extend([top, top])
            i += 2
            continue
        if text.startswith("$(", i):
            out.extend([top, top])
            stack.append("plain")
            i += 2
            continue
        if top == "plain":
            if ch == "'":
                end = text.index("'", i + 1)
                out.append("plain")
                out.extend(["single"] * (end - i - 1))
                out.append("plain")
                i = end + 1
                continue
            if ch == '"':
                stack.append("double")
            elif ch == ")" and len(stack) > 1:
                stack.pop()
            elif ch == "#" and (i == 0 or text[i - 1] in " \t\n;"):
                end = text.find("\n", i)
                end = len(text) if end < 0 else end
                out.extend(["comment"] * (end - i))
                i = end
                continue
            elif text.startswith("<<'", i):
                end = text.index("'", i + 3)
                heredoc = text[i + 3:end]
                nl = text.index("\n", end)
                out.extend(["plain"] * (nl + 1 - i))
                i = nl + 1
                continue
            out.append("plain")
        else:  # double
            out.append("double")
            if ch == '"':
                stack.pop()
        i += 1
    return out


LOGGER = r"""
command_not_found_handle() {
    local cmd="$1"
    shift
    { printf '%s' "$cmd"; for a in "$@"; do printf '\x1f%s' "$a"; done; printf '\x1e'; } >> "$ARGV_LOG"
    case "$cmd:${1:-}" in
        blockdev:--getsize64) printf '%s\n' "$TARGET_SIZE_FAKE" ;;
        id:-u) echo 0 ;;
    esac
    case "${MODE:-}:$cmd:$*" in
        mismatch:findmnt:*PWNED*) echo 9:9 ;;
    esac
    return 0
}
mountpoint() { return 1; }
cat() { local l; while IFS= read -r l || [ -n "$l" ]; do printf '%s\n' "$l"; done < "$1"; }
tr() { local l; while IFS= read -r l; do printf '%s\n' "${l// /}"; done; }  # restore.sh only uses tr -d ' '
awk() { case "$*" in *proc/swaps*) return 1 ;; esac; return 0; }  # no swap; no leftover mounts
"""


def run_logged(h, text: str, mode: str = "") -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """restore.sh under bash with every outside command logged, not run (PATH is empty)."""
    work = h["tmp"] / f"sandbox{mode}"
    work.mkdir()
    (work / "env.sh").write_text(LOGGER)
    # The one line a logger cannot answer: [ -b "$TARGET" ] needs a real block device.
    text = text.replace('[ -b "$disk" ] ||', 'true ||')
    # Nor can it show a kernel's view of a new table: settled (waiting for it) is answered at once.
    assert "\nsettled() {" in text
    text = text.replace("\nsettled() {", "\nsettled() { :; }\n_settled_on_a_real_kernel() {", 1)
    size = next(line.split()[2] for line in text.splitlines() if line.startswith("check_target "))
    env = {"PATH": str(work / "nobin"), "BASH_ENV": str(work / "env.sh"), "ARGV_LOG": str(work / "argv"),
           "TARGET_SIZE_FAKE": size, "MODE": mode, "RESCUE_STATE": str(work / "state"),
           "RESCUE_ROOT": str(work / "root"), "RESCUE_WORK": str(work / "work")}
    (work / "state").mkdir()
    (work / "root").mkdir()
    (work / "work").mkdir()
    r = subprocess.run(["/bin/bash", "-c", text, "restore.sh"], env=env, capture_output=True, text=True,
                       cwd=work, timeout=60)
    log = (work / "argv").read_text() if (work / "argv").exists() else ""
    calls = [c.split("\x1f") for c in log.split("\x1e") if c]
    return r, calls


def test_restore_sh_hands_odd_names_to_commands_as_single_words(hostile, capsys):
    h = hostile
    text = render(h, capsys)
    r, calls = run_logged(h, text)
    assert not evaluated(h["tmp"]), r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    root = str(h["tmp"] / "sandbox" / "root")
    mounts = {c[-1] for c in calls if c[0] == "mount" and "--bind" not in c}
    for mp in h["layout"].filesystems:
        if mp.mountpoint and mp.fstype != "swap":
            assert root + (mp.mountpoint if mp.mountpoint != "/" else "") in mounts, (mp.mountpoint, mounts)
    sources = {c[-2] for c in calls if c[0] in ("cp", "rsync")}
    for vault in h["vaults"].values():
        assert any(f"/{vault}/2026-1126-0300 " in s for s in sources), (vault, sources)
    labels = {c[c.index("-L") + 1] for c in calls if c[0].startswith("mkfs") and "-L" in c}
    assert any(lbl.startswith("l'$(echo") for lbl in labels), labels
    assert all(not a.startswith(str(h["tmp"] / "outside")) for c in calls for a in c)


def test_restore_sh_refusal_message_evaluates_nothing(hostile, capsys):
    """The mount proof fails (another disk with the same UUID): its message names the mount point
    without evaluating it."""
    h = hostile
    r, calls = run_logged(h, render(h, capsys), mode="mismatch")
    assert r.returncode != 0
    assert "another disk with the same UUID" in r.stderr
    assert not evaluated(h["tmp"]), r.stderr
