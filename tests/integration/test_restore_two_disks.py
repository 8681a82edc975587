"""A machine with two disks restored onto two new disks in one `rescue restore`.

/ (ext4) lives on the first disk, /srv (xfs) on the second, each with its own
gpt table. The machine is backed up by real dirvish with the capture hook
(`--disk A --disk B`), both disks are detached (the disaster), and two new loop
disks are restored with `--target OLD=NEW` per captured disk. Both tables keep
their label-id and PARTUUIDs, both filesystems their UUIDs, both vaults' files
are back. An ambiguous or unknown mapping writes nothing; a second run onto the
same disks restores them again, and so does the unattended config's [[targets]].
"""

from __future__ import annotations

import json
from pathlib import Path

import rescue
from rescue.cli import main
from rescue.demo import diff_trees
from rescue.demo.dirvish import hook_line, rescue_command, run_dirvish, write_master_conf, write_vault_conf
from rescue.devices import attach, detach, loop_disk
from rescue.errors import Exit
from rescue.layout.sfdisk import parse_sfdisk
from rescue.run import run
from rescue.unattended import load_config
from rescue.unattended import restore as unattended_restore

MIB = 1 << 20
IMAGE = "2026-1205-0300"
SIZES = {"a": 200 * MIB, "b": 400 * MIB}


def blkid(node: str) -> dict[str, str]:
    out = run(["blkid", "-p", "-o", "export", node]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _machine(work: Path) -> dict:
    """Two disks (/ ext4 on a, /srv xfs on b), mounted under work/root; what was captured of them."""
    root = work / "root"
    root.mkdir(parents=True)
    found: dict = {"root": root, "disks": {}}
    for name, fstype in (("a", "ext4"), ("b", "xfs")):
        img = work / f"{name}.img"
        run(["truncate", "-s", str(SIZES[name]), img])
        run(["sfdisk", "-q", img], input="label: gpt\n,,L\n")
        dev = attach(img)
        found["disks"][name] = dev
        run(["mkfs.ext4", "-q", "-L", "root", dev + "p1"] if fstype == "ext4"
            else ["mkfs.xfs", "-q", "-f", "-L", "srv", dev + "p1"])
    a, b = found["disks"]["a"], found["disks"]["b"]
    run(["mount", a + "p1", root])
    (root / "srv").mkdir()
    run(["mount", b + "p1", root / "srv"])
    found["uuid"] = {n: blkid(d + "p1")["UUID"] for n, d in found["disks"].items()}
    found["table"] = {n: parse_sfdisk(run(["sfdisk", "-d", d]).stdout) for n, d in found["disks"].items()}
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("twodisks\n")
    (root / "etc" / "fstab").write_text(f"UUID={found['uuid']['a']} / ext4 defaults 0 1\n"
                                        f"UUID={found['uuid']['b']} /srv xfs defaults 0 2\n")
    (root / "srv" / "www").mkdir()
    (root / "srv" / "www" / "index.html").write_text("<p>served from the second disk</p>\n")
    (root / "srv" / "big.bin").write_bytes(bytes(range(256)) * 4096)
    return found


def _bank(work: Path, m: dict) -> Path:
    """A dirvish bank on a tmpfs of its own with a vault per filesystem and the capture hook."""
    backup = work / "backup"
    backup.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=64m", "rescue-test-backup", backup])
    (backup / "DISKLABEL").write_text("BACKUP-1\n")
    bank, conf = backup / "bank", work / "etc-dirvish"
    bank.mkdir(mode=0o700)
    vaults = {"root": m["root"], "srv": m["root"] / "srv"}
    write_master_conf(conf, bank, list(vaults))
    hook = hook_line(["env", f"PYTHONPATH={Path(rescue.__file__).parents[1]}", *rescue_command(), "capture",
                      "--disk", m["disks"]["a"], "--disk", m["disks"]["b"], "--root", str(m["root"])])
    for name, tree in vaults.items():
        write_vault_conf(bank, name, client="localhost", tree=tree, hook=hook, rsync_options=())
        run_dirvish(conf, ["dirvish", "--vault", name, "--image", IMAGE, "--init"])
    return bank


def _zero_start(dev: str) -> bool:
    with open(dev, "rb") as f:
        return f.read(4 * MIB) == bytes(4 * MIB)


def _check(m: dict, bank: Path, new: dict[str, str], where: Path) -> None:
    for name, dev in new.items():
        old, got = m["table"][name], parse_sfdisk(run(["sfdisk", "-d", dev]).stdout)
        assert got.label == "gpt" and got.label_id == old.label_id, (name, got)
        assert [p.uuid for p in got.partitions] == [p.uuid for p in old.partitions]
        assert blkid(dev + "p1")["UUID"] == m["uuid"][name]
    assert blkid(new["a"] + "p1")["TYPE"] == "ext4" and blkid(new["b"] + "p1")["TYPE"] == "xfs"
    where.mkdir(exist_ok=True)
    run(["mount", "-o", "ro", new["a"] + "p1", where])
    try:
        run(["mount", "-o", "ro", new["b"] + "p1", where / "srv"])
        try:
            problems = diff_trees(bank / "root" / IMAGE / "tree", where, times=True, top=False,
                                  exclude=["srv", "lost+found", "proc", "sys", "dev", "run", "tmp", "var", "mnt"])
            problems += diff_trees(bank / "srv" / IMAGE / "tree", where / "srv", times=True, top=False)
            assert problems == []
            assert (where / "srv" / "www" / "index.html").read_text() == "<p>served from the second disk</p>\n"
            assert (where / "etc" / "hostname").read_text() == "twodisks\n"
        finally:
            run(["umount", where / "srv"])
    finally:
        run(["umount", where])


def _cut_off_before_the_copies(state: Path) -> None:
    """Make the finished restore's journal look like a run killed while it verified the copies."""
    [path] = state.glob("*/journal.json")
    journal = json.loads(path.read_text())
    steps = json.loads(path.with_name("plan.json").read_text())["steps"]
    keys = [s["key"] for s in steps[:next(i for i, s in enumerate(steps) if s["kind"] == "verify")]]
    assert any(k.startswith("partition:") for k in keys) and any(k.startswith("mkfs:") for k in keys)
    journal["steps"] = {k: journal["steps"][k] for k in keys}
    journal["finished"] = None
    path.write_text(json.dumps(journal))


def test_two_disks_restored_onto_two_targets_in_one_restore(tmp_path, capsys):
    m = _machine(tmp_path / "m")
    try:
        try:
            bank = _bank(tmp_path, m)
        finally:
            run(["umount", "-R", m["root"]], check=False)
            for dev in m["disks"].values():  # the disaster: both disks are gone
                detach(dev)
        old = m["disks"]
        with loop_disk(tmp_path / "new-a.img", SIZES["a"]) as na, loop_disk(tmp_path / "new-b.img", SIZES["b"]) as nb:
            base = ["restore", "--bank", str(bank), "--client", "localhost",
                    "--state-dir", str(tmp_path / "state"), "--yes"]
            # refused mappings write nothing
            for targets, said in (([na], "2 disks with a partition table"),
                                  ([f"{old['a']}={na}", f"/dev/nosuch={nb}"], "/dev/nosuch is not a captured disk"),
                                  ([f"{old['a']}={na}", f"{old['b']}={na}"], "is named twice"),
                                  ([f"{old['a']}={na}"], "no target for the captured disk")):
                argv = base + [a for t in targets for a in ("--target", t)]
                assert main(argv) == Exit.REFUSED, targets
                assert said in capsys.readouterr().err
                assert _zero_start(na) and _zero_start(nb)
            mapping = ["--target", f"{old['b']}={nb}", "--target", f"{old['a']}={na}"]
            argv = base + mapping
            assert main(["plan", *base[1:5], *mapping]) == Exit.OK
            review = capsys.readouterr().out
            assert f"WILL BE DESTROYED on {na}" in review and f"WILL BE DESTROYED on {nb}" in review
            assert f"replaces  captured disk {old['b']}" in review
            assert main(argv) == Exit.OK, capsys.readouterr().out[-3000:]
            out = capsys.readouterr().out
            assert "result:   OK" in out and "every UUID=/LABEL=/PARTUUID= entry names a filesystem" in out, out
            _check(m, bank, {"a": na, "b": nb}, tmp_path / "mnt")
            # a run cut off while it verified (its journal says so) resumes on both disks
            _cut_off_before_the_copies(tmp_path / "state")
            assert main(argv) == Exit.OK, capsys.readouterr().out[-3000:]
            out = capsys.readouterr().out
            assert "resuming an earlier run" in out and "every step runs again" not in out, out
            assert f"done already: write gpt partition table (1 partitions) to {nb}" in out, out
            assert f"done already: make xfs on {nb}p1" in out, out
            _check(m, bank, {"a": na, "b": nb}, tmp_path / "mnt")
            # a second run onto the same disks restores them again
            assert main(argv) == Exit.OK, capsys.readouterr().out[-3000:]
            out = capsys.readouterr().out
            assert "every step runs again" in out and "result:   OK" in out, out
            _check(m, bank, {"a": na, "b": nb}, tmp_path / "mnt")
            # the unattended config's [[targets]] does the same
            config = tmp_path / "rescue-unattended.toml"
            config.write_text(f'bank = "{bank}"\nclient = "localhost"\nlog_dir = "{tmp_path / "state"}"\n'
                              f'[[targets]]\ndisk = "{old["a"]}"\ndevice = "{na}"\n'
                              f'[[targets]]\ndisk = "{old["b"]}"\ndevice = "{nb}"\n')
            loaded = load_config(config)
            assert unattended_restore(loaded, [na, nb]) == Exit.OK, capsys.readouterr().out[-3000:]
            assert "RESCUE-STEP-DONE partition:" + nb in capsys.readouterr().out
            _check(m, bank, {"a": na, "b": nb}, tmp_path / "mnt")
    finally:
        run(["umount", tmp_path / "backup"], check=False)
