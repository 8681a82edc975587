"""LUKS containers restored (issue 18): the plan's steps and their order, the cryptsetup
commands, and nothing secret in the plan, plan.json or restore.sh.

Two machines: the gpt fixture disk whose /home and swap lie in LUKS2 containers (the
laptop's "encrypted data partition"), and the md/LVM machine RECORDED inside the rescue VM
(data/lvm-md/) with its PV moved into a LUKS container on md0 (Debian's "encrypted LVM").
This host's kernel has no device-mapper: the commands run in the integration and vm tiers.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
from plan_fixtures import GIB, MIB, image, images, layout, target

from rescue.capture.build import build_layout
from rescue.errors import PlanRefused
from rescue.layout.model import BlockLayers, Filesystem, LuksDevice, LuksKeyslot, Swap
from rescue.plan import PlanOptions, build_plan
from rescue.plan.luks import open_name
from rescue.plan.model import Plan
from rescue.run import Result
from rescue.steps.luks import (
    CheckLuksKey,
    CloseLuks,
    LuksKey,
    MissingKey,
    OpenLuks,
    RestoreLuksHeader,
    WrongKey,
    check_keys,
    close_left_container,
)

HEADERS = "/srv/backup/bank/home/2026-1126-0300/rescue"
HOME_UUID = "5a3e3c1d-7f7b-4a57-9a55-2a8c6a0f0c01"
SWAP_UUID = "5a3e3c1d-7f7b-4a57-9a55-2a8c6a0f0c02"
SECRET = "correct horse battery staple"
DATA = Path(__file__).resolve().parent / "data" / "lvm-md"


def _luks(device: str, uuid: str, name: str, crypttab: bool = True, **kw) -> LuksDevice:
    node = device.removeprefix("/dev/").replace("/", "-")
    c = LuksDevice(
        device=device, version=2, uuid=uuid, label=None, cipher="aes-xts-plain64", key_bits=512,
        data_offset=16 * MIB, keyslots=(LuksKeyslot(0, "luks2", 512, "argon2id"),),
        mapping=f"/dev/mapper/{name}",
        crypttab=f"{name} UUID={uuid} none luks,discard" if crypttab else None,
        header_file=f"{HEADERS}/luks-{node}-header.img")
    return dataclasses.replace(c, **kw)


def laptop(**luks_changes):
    """The gpt fixture machine with /home (xfs) and swap inside LUKS2 containers."""
    base = layout("gpt")
    fss = []
    for fs in base.filesystems:
        if fs.mountpoint == "/home":
            fss.append(Filesystem("/dev/sda6", "crypto_LUKS", uuid=HOME_UUID))
            fss.append(dataclasses.replace(fs, device="/dev/mapper/crypthome"))
        elif fs.fstype == "swap":
            fss.append(Filesystem("/dev/sda4", "crypto_LUKS", uuid=SWAP_UUID))
            fss.append(dataclasses.replace(fs, device="/dev/mapper/cryptswap"))
        else:
            fss.append(fs)
    swap = next(fs for fs in base.filesystems if fs.fstype == "swap")
    containers = (_luks("/dev/sda6", HOME_UUID, "crypthome", **luks_changes),
                  _luks("/dev/sda4", SWAP_UUID, "cryptswap"))
    return dataclasses.replace(base, filesystems=tuple(fss),
                               swaps=(Swap("/dev/dm-1", 0, uuid=swap.uuid, label=swap.label),),
                               layers=BlockLayers(luks=containers))


def test_a_luks_partition_is_checked_first_written_back_opened_filled_and_closed_last():
    lay = laptop()
    plan = build_plan(lay, images(lay), target(16 * GIB))
    kinds = [s.kind for s in plan.steps]
    assert kinds[:2] == ["luks-key", "luks-key"], kinds  # a wrong key is said before anything is written
    assert kinds[2:8] == ["wipe", "partition", "luks-header", "luks-open", "luks-header", "luks-open"], kinds
    assert kinds[-2:] == ["unmount", "luks-close"], kinds
    home = next(s for s in plan.steps if isinstance(s, RestoreLuksHeader) and s.uuid == HOME_UUID)
    assert home.device == "/dev/sdb6"
    assert home.restore_argv() == ["cryptsetup", "luksHeaderRestore", "--batch-mode", "--header-backup-file",
                                   f"{HEADERS}/luks-sda6-header.img", "/dev/sdb6"]
    opened = next(s for s in plan.steps if isinstance(s, OpenLuks) and s.uuid == HOME_UUID)
    assert opened.open_argv() == ["cryptsetup", "open", "--type", "luks", "--key-file=-", "/dev/sdb6", "crypthome"]
    made = {f.mountpoint: f for f in plan.filesystems}
    assert made["/home"].device == "/dev/mapper/crypthome" and made["/home"].fstype == "xfs"
    assert "LUKS crypthome: /hom" in plan.review() and "LUKS cryptswap: swap" in plan.review()
    assert made["/home"].number == 6 and made["/home"].vault == "home"
    assert [s.device for s in plan.swaps] == ["/dev/mapper/cryptswap"]  # once, not also as /dev/dm-1
    mounts = {s.mountpoint: s.device for s in plan.steps if s.kind == "mount"}
    assert mounts["/home"] == "/dev/mapper/crypthome"
    # the containers keep their sizes: the kept header says where the data starts and ends
    moved = {m.number: m for m in plan.migrations}
    assert moved[6].new_size == moved[6].old_size and moved[6].fstype == "crypto_LUKS"
    assert moved[4].new_size == moved[4].old_size
    assert not any(s.kind == "mkfs" and s.device.startswith("/dev/sdb6") for s in plan.steps)
    close = plan.steps[-1]
    assert isinstance(close, CloseLuks) and {n for n, _ in close.containers} == {"crypthome", "cryptswap"}


def test_the_open_name_is_crypttabs_then_the_captured_mapping_then_the_uuid():
    c = _luks("/dev/sda6", HOME_UUID, "crypthome")
    assert open_name(c) == "crypthome"
    assert open_name(dataclasses.replace(c, crypttab=None, mapping="/dev/mapper/luks-old")) == "luks-old"
    assert open_name(dataclasses.replace(c, crypttab=None, mapping=None)) == f"luks-{HOME_UUID}"


def test_a_container_without_a_crypttab_line_is_restored_with_a_warning():
    lay = laptop(crypttab=False)
    plan = build_plan(lay, images(lay), target(16 * GIB))
    assert any("no line in the captured /etc/crypttab" in w for w in plan.warnings), plan.warnings


def test_a_container_whose_header_was_not_kept_is_refused_with_what_to_do():
    lay = laptop(header_file=None)
    with pytest.raises(PlanRefused, match="no header was kept for LUKS container /dev/sda6") as e:
        build_plan(lay, images(lay), target(16 * GIB))
    assert "rescue capture" in e.value.fix
    lay = laptop(header_file="luks-sda6-header.img")  # named, but not found beside the layout it came with
    with pytest.raises(PlanRefused, match="is not beside the image's layout.json"):
        build_plan(lay, images(lay), target(16 * GIB))


def test_two_containers_opened_under_one_name_are_refused():
    lay = laptop()
    home, swap = lay.layers.luks
    lay = dataclasses.replace(lay, layers=BlockLayers(luks=(home, dataclasses.replace(
        swap, crypttab=f"crypthome UUID={swap.uuid} none luks"))))
    with pytest.raises(PlanRefused, match="both opened as crypthome"):
        build_plan(lay, images(lay), target(16 * GIB))


def test_nothing_secret_and_every_luks_step_in_plan_json_review_and_restore_sh(tmp_path):
    lay = laptop()
    plan = build_plan(lay, images(lay), target(16 * GIB))
    text = plan.dumps()
    again = Plan.from_json(json.loads(text))
    assert again.steps == plan.steps and again.fingerprint == plan.fingerprint
    script = plan.script()
    for shown in (text, plan.review(), script):
        assert SECRET not in shown and "passphrase=" not in shown
    # restore.sh asks for each passphrase itself (hidden, from the terminal) before the wipe,
    # checks it against the kept header, and feeds it to cryptsetup on stdin only
    assert script.index("read -rs -p") < script.index("wipefs -a")
    assert ("cryptsetup open --test-passphrase --header /srv/backup/bank/home/2026-1126-0300/rescue/"
            "luks-sda6-header.img --key-file=- ") in script
    assert "printf '%s' \"$LUKS_KEY_5a3e3c1d_7f7b_4a57_9a55_2a8c6a0f0c01\" | cryptsetup open --type luks " \
           "--key-file=- /dev/sdb6 crypthome" in script
    assert "export LUKS_KEY" not in script  # never in a child's environment
    assert "cryptsetup luksHeaderRestore --batch-mode --header-backup-file" in script
    assert "[ ! -e /dev/mapper/crypthome ] || cryptsetup close crypthome" in script
    (tmp_path / "restore.sh").write_text(script)
    subprocess.run(["bash", "-n", str(tmp_path / "restore.sh")], check=True)


def lvm_on_luks_on_md():
    """The recorded md/LVM machine, its PV moved into a LUKS2 container on md0."""
    files = {p.name: p.read_bytes() for p in DATA.iterdir() if p.name not in ("README", "layout.json")}
    lay = build_layout(files, client="lvmtest", captured_at="2026-12-04T23:43:00+00:00")
    (vg,) = lay.layers.vgs
    (md,) = lay.layers.md
    plain = dataclasses.replace(vg, lvs=tuple(lv for lv in vg.lvs if lv.name in ("root", "swap", "home")),
                                pvs=tuple(dataclasses.replace(pv, device="/dev/mapper/md0_crypt") for pv in vg.pvs))
    uuid = "0b6d6a43-33d4-4c35-8f2b-7f3c26c1c5aa"
    container = _luks(md.device, uuid, "md0_crypt")
    fss = [Filesystem(md.device, "crypto_LUKS", uuid=uuid) if fs.device == md.device else fs for fs in lay.filesystems]
    fss.append(Filesystem("/dev/mapper/md0_crypt", "LVM2_member", uuid=vg.pvs[0].uuid))
    return dataclasses.replace(lay, filesystems=tuple(fss),
                               layers=dataclasses.replace(lay.layers, vgs=(plain,), luks=(container,))), uuid


def test_lvm_in_a_luks_container_on_md_is_made_inside_the_opened_container():
    lay, uuid = lvm_on_luks_on_md()
    plan = build_plan(lay, images(lay), target(64 * GIB, device="/dev/sdz"), PlanOptions(source_disk="/dev/vdb"))
    kinds = [s.kind for s in plan.steps]
    assert kinds[:6] == ["luks-key", "wipe", "partition", "md-create", "luks-header", "luks-open"], kinds
    assert kinds[6] == "lvm-vg", kinds
    assert kinds[-3:] == ["lvm-off", "luks-close", "md-stop"], kinds  # closed after lvm-off, before md-stop
    header = plan.steps[4]
    assert header.device == "/dev/md0" and header.uuid == uuid
    make = plan.steps[6]
    assert {dev for dev, _ in make.pvs} == {"/dev/mapper/md0_crypt"}
    assert any(a == "--devices=/dev/mapper/md0_crypt" for a in make.activate_argv())
    made = {f.mountpoint: f for f in plan.filesystems}
    assert made["/mnt/t"].device == "/dev/mapper/vgtest-root"
    assert [s.device for s in plan.swaps] == ["/dev/mapper/vgtest-swap"]
    again = Plan.from_json(json.loads(plan.dumps()))  # plan.json: a resume offers the same steps
    assert again.steps == plan.steps
    assert "md0: LUKS md0_crypt:" in plan.review()


class Gateway:
    """The gateway's place: cryptsetup answers as it would, every call and its stdin kept."""

    def __init__(self, good: bytes = SECRET.encode(), status: str | None = None) -> None:
        self.good, self.status, self.calls = good, status, []
        self.noted: dict = {}

    def luks_key(self, uuid):
        return self.keys.get(uuid)

    def data(self, key=None):
        return self.noted

    def save(self):
        pass

    def run(self, argv, check=True, input=None, **kw):
        self.calls.append((list(argv), input))
        if argv[:3] == ["cryptsetup", "open", "--test-passphrase"]:
            return Result(tuple(argv), 0 if input == self.good else 2, "", "No key available with this passphrase.")
        if argv[:2] == ["cryptsetup", "status"]:
            if self.status is None:
                return Result(tuple(argv), 4, "", "")
            return Result(tuple(argv), 0, f"/dev/mapper/{argv[2]} is active.\n  type:    LUKS2\n"
                                          f"  device:  {self.status}\n", "")
        if argv[:2] == ["cryptsetup", "luksUUID"]:
            return Result(tuple(argv), 0, HOME_UUID + "\n", "")
        return Result(tuple(argv), 0, "", "")


def test_a_wrong_key_is_refused_before_anything_runs_and_the_key_goes_only_to_stdin():
    lay = laptop()
    plan = build_plan(lay, images(lay), target(16 * GIB))
    gw = Gateway()
    wrong = {HOME_UUID: LuksKey(b"not it", "keyfile /media/k"), SWAP_UUID: LuksKey(SECRET, "passphrase typed")}
    with pytest.raises(WrongKey, match=f"wrong passphrase for LUKS UUID {HOME_UUID} \\(crypthome\\), try again") as e:
        check_keys(gw.run, plan.steps, wrong)
    assert "not it" not in str(e.value) and "keyfile /media/k" in e.value.why
    assert all(argv[:3] == ["cryptsetup", "open", "--test-passphrase"] for argv, _ in gw.calls)
    with pytest.raises(MissingKey, match="--luks-key crypthome=FILE"):
        check_keys(gw.run, plan.steps, {SWAP_UUID: LuksKey(SECRET, "passphrase typed")})
    good = {HOME_UUID: LuksKey(SECRET, "passphrase typed"), SWAP_UUID: LuksKey(SECRET, "passphrase typed")}
    gw.calls.clear()
    check_keys(gw.run, plan.steps, good)
    for argv, stdin in gw.calls:
        assert SECRET not in " ".join(argv) and stdin == SECRET.encode()
    assert SECRET not in repr(good) and "hidden" in repr(good[HOME_UUID])


def test_the_open_step_feeds_the_key_on_stdin_and_stops_at_the_old_disks_container():
    gw = Gateway()
    gw.keys = {HOME_UUID: LuksKey(SECRET, "passphrase typed")}
    step = OpenLuks(device="/dev/sdb6", name="crypthome", uuid=HOME_UUID)
    step.run(gw)
    (opened,) = [(a, i) for a, i in gw.calls if a[:2] == ["cryptsetup", "open"]]
    assert opened == (step.open_argv(), SECRET.encode())
    assert gw.noted["luks"] == {"name": "crypthome", "device": "/dev/sdb6", "uuid": HOME_UUID}
    old = Gateway(status="/dev/sda6")  # the old disk's container, opened by hand under that name
    old.keys = gw.keys
    with pytest.raises(PlanRefused, match="already open, on /dev/sda6"):
        step.run(old)
    assert not any(a[:2] == ["cryptsetup", "open"] for a, _ in old.calls)
    same = Gateway(status="/dev/sdb6")  # a resumed restore: open already, from the new partition
    same.keys = {}
    step.run(same)
    with pytest.raises(MissingKey):
        OpenLuks(device="/dev/sdb4", name="cryptswap", uuid=SWAP_UUID).run(gw)


def test_close_and_a_killed_runs_leftover_touch_only_this_restores_container():
    gw = Gateway(status="/dev/sda6")  # the old disk's
    CloseLuks((("crypthome", "/dev/sdb6"),)).run(gw)
    assert not any(a[:2] == ["cryptsetup", "close"] for a, _ in gw.calls)
    assert close_left_container(gw.run, "crypthome", "/dev/sdb6") is False
    ours = Gateway(status="/dev/sdb6")
    CloseLuks((("crypthome", "/dev/sdb6"),)).run(ours)
    assert ["cryptsetup", "close", "crypthome"] in [a for a, _ in ours.calls]
    assert close_left_container(Gateway(status="/dev/sdb6").run, "crypthome", "/dev/sdb6") is True


def test_the_check_step_says_wrong_passphrase_and_runs_nothing_else():
    gw = Gateway()
    gw.keys = {HOME_UUID: LuksKey(b"nope", "passphrase typed")}
    step = CheckLuksKey(uuid=HOME_UUID, name="crypthome", header=f"{HEADERS}/luks-sda6-header.img")
    with pytest.raises(WrongKey, match="try again"):
        step.run(gw)
    assert [a[:3] for a, _ in gw.calls] == [["cryptsetup", "open", "--test-passphrase"]]
    assert image("home", "/home").vault == "home"  # the fixture's images are what the plans above used


def test_a_new_master_key_is_asked_twice_and_made_by_luksformat_with_the_captured_identity(tmp_path):
    lay = laptop()
    home, swap = lay.layers.luks
    home = dataclasses.replace(home, header_file=None, label="homevault",
                               crypttab=f"crypthome UUID={HOME_UUID} /etc/keys/home.key luks")
    lay = dataclasses.replace(lay, layers=BlockLayers(luks=(home, swap)))
    plan = build_plan(lay, images(lay), target(16 * GIB), PlanOptions(luks_new_key=True))
    kinds = [s.kind for s in plan.steps]
    assert kinds[:2] == ["luks-new-key", "luks-new-key"], kinds  # asked before anything is written
    assert kinds[2:8] == ["wipe", "partition", "luks-format", "luks-open", "luks-format", "luks-open"], kinds
    assert "luks-header" not in kinds and "luks-key" not in kinds and kinds[-1] == "luks-close"
    fmt = next(s for s in plan.steps if s.kind == "luks-format" and s.uuid == HOME_UUID)
    assert fmt.format_argv() == [
        "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--uuid", HOME_UUID,
        "--cipher", "aes-xts-plain64", "--key-size", "512", "--pbkdf", "argon2id", "--label", "homevault",
        "--offset", str(16 * MIB // 512), "--key-file=-", "/dev/sdb6"]
    warned = next(w for w in plan.warnings if "crypthome" in w and "new master key" in w)
    assert "no longer open it" in warned and "/etc/keys/home.key" in warned and "added to its keyslots" in warned
    # crypttab's keyfile is a file of the machine: added back once the files are copied, before grub
    (add,) = [s for s in plan.steps if s.kind == "luks-add-keyfile"]
    assert (add.device, add.uuid, add.keyfile) == ("/dev/sdb6", HOME_UUID, "/etc/keys/home.key")
    assert max(i for i, s in enumerate(plan.steps) if s.kind == "copy") < kinds.index("luks-add-keyfile")
    assert kinds.index("luks-add-keyfile") < kinds.index("bootloader")
    script = plan.script()
    assert 'cryptsetup luksAddKey --batch-mode --key-file=- /dev/sdb6 "$ROOT"/etc/keys/home.key' in script
    assert script.count("read -rs -p 'new passphrase for LUKS crypthome: '") == 1
    assert script.index("the same again") < script.index("wipefs -a")
    assert "| cryptsetup luksFormat --batch-mode --type luks2 --uuid " + HOME_UUID in script
    (tmp_path / "restore.sh").write_text(script)
    subprocess.run(["bash", "-n", str(tmp_path / "restore.sh")], check=True)
    assert Plan.from_json(json.loads(plan.dumps())).steps == plan.steps
    gw = Gateway()
    with pytest.raises(MissingKey):
        check_keys(gw.run, plan.steps, {HOME_UUID: LuksKey(SECRET, "new passphrase typed twice")})
    check_keys(gw.run, plan.steps, {u: LuksKey(SECRET, "new passphrase typed twice") for u in (HOME_UUID, SWAP_UUID)})
    assert gw.calls == []  # a new key opens nothing old: there is nothing to check it against


def test_only_a_keyfile_of_the_machine_itself_is_added_back():
    from rescue.plan.luks import _crypttab_keyfile

    home = laptop().layers.luks[0]
    for field, added in (("/etc/keys/home.key", "/etc/keys/home.key"), ("none", None), ("-", None),
                         ("/dev/disk/by-label/KEYSTICK", None), ("/keys/home.key:LABEL=stick", None)):
        c = dataclasses.replace(home, crypttab=f"crypthome UUID={HOME_UUID} {field} luks")
        assert _crypttab_keyfile(c) == added, field


def test_luks1_gets_its_hash_and_no_luks2_only_options():
    lay = laptop()
    home, swap = lay.layers.luks
    home = dataclasses.replace(home, version=1, label=None, data_offset=4096 * 512,
                               keyslots=(LuksKeyslot(0, None, 256, "pbkdf2", "sha512"),), key_bits=256)
    lay = dataclasses.replace(lay, layers=BlockLayers(luks=(home, swap)))
    plan = build_plan(lay, images(lay), target(16 * GIB), PlanOptions(luks_new_key=True))
    fmt = next(s for s in plan.steps if s.kind == "luks-format" and s.uuid == HOME_UUID)
    argv = fmt.format_argv()
    assert argv[3:5] == ["--type", "luks1"] and "--hash" in argv and argv[argv.index("--hash") + 1] == "sha512"
    assert "--pbkdf" not in argv and "--label" not in argv and argv[argv.index("--offset") + 1] == "4096"


def test_a_container_not_open_at_capture_is_made_again_and_said_empty():
    lay = laptop()
    home, swap = lay.layers.luks
    lay = dataclasses.replace(
        lay, filesystems=tuple(fs for fs in lay.filesystems if fs.device != "/dev/mapper/crypthome"),
        layers=BlockLayers(luks=(dataclasses.replace(home, mapping=None), swap)))
    plan = build_plan(lay, images(lay), target(16 * GIB))
    assert any(s.kind == "luks-header" and s.uuid == HOME_UUID for s in plan.steps)
    (said,) = [w for w in plan.warnings if HOME_UUID in w]
    assert "was not open when the layout was captured" in said and "/dev/mapper/crypthome" in said
    assert not any(HOME_UUID in w for w in plan.warnings if w is not said)
    assert not any(SWAP_UUID in w for w in plan.warnings)  # the swap container holds its swap


def test_luks_on_a_mirror_restored_onto_two_disks_is_made_once():
    """--target /dev/sda=/dev/sdc --target /dev/sdb=/dev/sdd, / in LUKS on md1 (a mirror across
    both disks): the key is checked before either disk is wiped, the header written once onto the
    array made from both new members, opened once, closed once after the VGs, before the arrays stop."""
    from test_plan_md import md_layout

    lay = md_layout()
    uuid = "0b6d6a43-33d4-4c35-8f2b-7f3c26c1c5ab"
    root = next(fs for fs in lay.filesystems if fs.mountpoint == "/")
    fss = [Filesystem("/dev/md1", "crypto_LUKS", uuid=uuid) if fs is root else fs for fs in lay.filesystems]
    fss.append(dataclasses.replace(root, device="/dev/mapper/md1_crypt"))
    lay = dataclasses.replace(lay, filesystems=tuple(fss),
                              layers=dataclasses.replace(lay.layers, luks=(_luks("/dev/md1", uuid, "md1_crypt"),)))
    plan = build_plan(lay, images(lay), [target(16 * GIB, device="/dev/sdc"), target(16 * GIB, device="/dev/sdd")],
                      PlanOptions(disk_map=(("/dev/sda", "/dev/sdc"), ("/dev/sdb", "/dev/sdd"))))
    kinds = [s.kind for s in plan.steps]
    assert kinds[:5] == ["luks-key", "wipe", "partition", "wipe", "partition"], kinds
    assert kinds.count("luks-header") == kinds.count("luks-open") == kinds.count("luks-close") == 1, kinds
    assert kinds.index("luks-header") > max(i for i, k in enumerate(kinds) if k == "md-create")
    assert kinds[-2:] == ["luks-close", "md-stop"], kinds
    (header,) = [s for s in plan.steps if s.kind == "luks-header"]
    assert header.device == "/dev/md1"
    assert {f.mountpoint: f.device for f in plan.filesystems}["/"] == "/dev/mapper/md1_crypt"


def test_a_resume_after_a_reboot_finds_closed_containers_by_the_luks_uuid_their_partitions_carry(tmp_path):
    """After a reboot the containers are closed: /dev/mapper/NAME (and the LVs inside) cannot be
    read, so the resume check looks at the partition (or the array's members) under each: it must
    still carry the container's LUKS UUID; else it is another disk and the restore starts over."""
    from rescue.engine.executor import disk_differences
    from rescue.engine.journal import Journal
    from rescue.steps.lvm import MakeVolumeGroup
    from rescue.steps.md import MakeArray

    array = MakeArray(device="/dev/md1", uuid="3a5a5e2c:1b7d0f11:8e0c7b55:0d4e9a02", level="raid1",
                      members=("/dev/sdc2", "/dev/sdd2"))
    home = OpenLuks(device="/dev/sdc6", name="crypthome", uuid=HOME_UUID)
    pv = OpenLuks(device="/dev/md1", name="md1_crypt", uuid=SWAP_UUID)
    vg = MakeVolumeGroup(name="vgmain", uuid="Aa1Bb2-Cc3D-d4Ee-5Ff6-Gg7H-h8Ii-9Jj0Kk",
                         pvs=(("/dev/mapper/md1_crypt", "pv0aaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"),),
                         config="", lvs=("root",))
    j = Journal(tmp_path / "j.json")
    for key, dev in (("mkfs:home", "/dev/mapper/crypthome"), ("mkfs:root", "/dev/mapper/vgmain-root")):
        j.start(key)
        j.record_check(key, dev, "UUID", "22222222-0000-4000-8000-000000000000")
        j.finish(key, 1.0)

    class S:
        def __init__(self, key):
            self.key = key

    md = {"TYPE": "linux_raid_member", "UUID": "3a5a5e2c-1b7d-0f11-8e0c-7b550d4e9a02"}
    disk = {"/dev/sdc6": {"TYPE": "crypto_LUKS", "UUID": HOME_UUID}, "/dev/sdc2": dict(md), "/dev/sdd2": dict(md)}
    steps = [array, home, pv, vg, S("mkfs:home"), S("mkfs:root")]
    assert disk_differences(j, steps, disk.get) == []
    disk["/dev/sdc6"] = {"TYPE": "ext4", "UUID": "x"}  # not the container any more
    (diff,) = disk_differences(j, steps, disk.get)
    assert diff == "/dev/mapper/crypthome is not active and /dev/sdc6 no longer carry it"


def test_a_mirrored_machine_with_luks_onto_one_disk_takes_the_grub_disk_without_being_named():
    """Debian's "encrypted RAID1": / in LUKS on md1 holds the whole machine on either disk, so a
    restore onto one new disk takes the disk grub was on (degraded arrays) as for plain md."""
    from test_plan_md import md_layout

    lay = md_layout()
    uuid = "0b6d6a43-33d4-4c35-8f2b-7f3c26c1c5ac"
    root = next(fs for fs in lay.filesystems if fs.mountpoint == "/")
    fss = [Filesystem("/dev/md1", "crypto_LUKS", uuid=uuid) if fs is root else fs for fs in lay.filesystems]
    fss.append(dataclasses.replace(root, device="/dev/mapper/md1_crypt"))
    lay = dataclasses.replace(lay, filesystems=tuple(fss),
                              layers=dataclasses.replace(lay.layers, luks=(_luks("/dev/md1", uuid, "md1_crypt"),)))
    plan = build_plan(lay, images(lay), target(16 * GIB, device="/dev/sdc"), PlanOptions())
    assert plan.source.device == "/dev/sda"
    from rescue.plan.build import _mountpoints_on

    assert _mountpoints_on(lay, lay.disks[0]) == ("/", "/boot")  # what refusals list per disk: / in LUKS too
    assert any("holding the whole machine" in w for w in plan.warnings), plan.warnings
    assert [s.device for s in plan.steps if s.kind == "luks-header"] == ["/dev/md1"]
