"""The LUKS containers of a restore: which captured containers come back, on which new devices,
opened under which names, and what lies inside them.

Pure: the captured containers, where each one's device went in, steps and refusals out. A
container comes back with its kept header (same UUID, every keyslot): the person's old
passphrase or keyfile opens it. What lay inside (a filesystem, swap, an LVM PV) is made on
/dev/mapper/NAME, NAME being the crypttab name, so the restored crypttab and fstab still fit.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rescue.errors import PlanRefused
from rescue.layout.model import Filesystem, LuksDevice
from rescue.steps.luks import AddLuksKeyfile, AskNewLuksKey, CheckLuksKey, CloseLuks, FormatLuks, OpenLuks, RestoreLuksHeader, mapper


def open_name(c: LuksDevice) -> str:
    """The name a container is opened as: crypttab's, else the one it had open, else luks-UUID."""
    if c.crypttab:
        words = c.crypttab.split()
        if words and not words[0].startswith("#"):
            return words[0]
    if c.mapping:
        return c.mapping.rsplit("/", 1)[-1]
    return f"luks-{c.uuid}"


def mapping_names(c: LuksDevice) -> set[str]:
    """The names the captured system used for what a container holds (/dev/mapper/NAME)."""
    names = {mapper(open_name(c))}
    if c.mapping:
        names.add(c.mapping)
    return names


@dataclass(frozen=True)
class ContainersOnDisk:
    """The captured containers on the disk being replayed (on its partitions or its arrays),
    and the filesystems and swaps made inside them (a PV inside one is made by its VG)."""

    containers: tuple[LuksDevice, ...] = ()
    filesystems: tuple[Filesystem, ...] = ()
    holding: frozenset[str] = frozenset()  # UUIDs of the containers seen holding something (a PV too)

    @property
    def devices(self) -> tuple[str, ...]:
        """The captured devices that hold a container (a partition or an array)."""
        return tuple(c.device for c in self.containers)

    def container_of(self, device: str) -> LuksDevice | None:
        """The container whose opened device is `device` (/dev/mapper/NAME), or None."""
        return next((c for c in self.containers if device in mapping_names(c)), None)

    def __bool__(self) -> bool:
        return bool(self.containers)


def containers_on_disk(containers: Sequence[LuksDevice], filesystems: Sequence[Filesystem],
                       restored: Callable[[str], bool]) -> ContainersOnDisk:
    """Containers on a restored device (`restored`: captured partition or array -> restored here?),
    and what lies on them: filesystems and swaps (an LVM PV is its VG's, the container itself
    shows as crypto_LUKS on the partition and is left out)."""
    found = ContainersOnDisk(tuple(c for c in containers if restored(c.device)))
    if not found:
        return found
    seen: set[str] = set()
    held = []
    holding = set()
    for fs in filesystems:
        c = found.container_of(fs.device)
        if c is not None and fs.fstype:
            holding.add(c.uuid)
        if c is None or fs.fstype in ("LVM2_member", "crypto_LUKS"):
            continue
        if c.uuid not in seen:  # a swap shows as /dev/dm-0 and as /dev/mapper/NAME: one is made
            seen.add(c.uuid)
            held.append(fs)
    return dataclasses.replace(found, filesystems=tuple(held), holding=frozenset(holding))


@dataclass(frozen=True)
class LuksRestore:
    """The steps that bring the containers back, in the places the plan puts them."""

    checks: tuple[CheckLuksKey | AskNewLuksKey, ...] = ()  # first, before anything is written
    make: tuple[RestoreLuksHeader | FormatLuks | OpenLuks, ...] = ()  # each header, then its open, after arrays
    warnings: tuple[str, ...] = ()
    keyfiles: tuple[AddLuksKeyfile, ...] = ()  # after a new master key: crypttab's keyfiles, once copied

    @property
    def close(self) -> CloseLuks | None:
        opened = tuple((s.name, s.device) for s in self.make if isinstance(s, OpenLuks))
        return CloseLuks(opened) if opened else None


def plan_containers(found: ContainersOnDisk, new_device: Mapping[str, str], folder: str | None = None,
                    new_key: bool = False) -> LuksRestore:
    """Per container: check the key, write the kept header onto its new device, open it; with
    `new_key` (--luks-new-key): ask a new passphrase, luksFormat with the captured identity, open it.

    `new_device`: captured device -> its new partition or array; `folder`: where the kept
    header files are when the layout names them without a folder (tests, old layouts)."""
    checks: list[CheckLuksKey | AskNewLuksKey] = []
    make: list[RestoreLuksHeader | FormatLuks | OpenLuks] = []
    warnings: list[str] = []
    keyfiles: list[AddLuksKeyfile] = []
    names: dict[str, str] = {}
    for c in found.containers:
        name = open_name(c)
        if name in names:
            raise PlanRefused(
                f"LUKS containers {names[name]} and {c.device} are both opened as {name}",
                why="each container is opened under its own /dev/mapper name, the one crypttab gives it",
                fix="fix the machine's /etc/crypttab, capture again and make a new backup",
            )
        names[name] = c.device
        if c.uuid not in found.holding:
            warnings.append(
                f"LUKS {c.device} (UUID {c.uuid}) "
                + ("was not open when the layout was captured" if not c.mapping else "held nothing rescue knows")
                + f": it is made again and opened as {name}, but what lay inside is not (make it by hand "
                "in /dev/mapper/" + name + " after the restore, and restore its files from their vault)")
        if new_key:
            checks.append(AskNewLuksKey(uuid=c.uuid, name=name))
            make.append(_format(c, name, new_device[c.device]))
            make.append(OpenLuks(device=new_device[c.device], name=name, uuid=c.uuid))
            warnings.append(_new_key_warning(c, name))
            if (keyfile := _crypttab_keyfile(c)) is not None:
                keyfiles.append(AddLuksKeyfile(device=new_device[c.device], uuid=c.uuid, name=name, keyfile=keyfile))
            continue
        header = _header_path(c, folder)
        if header is None:
            kept = f" ({c.header_file} is not beside the image's layout.json)" if c.header_file else ""
            raise PlanRefused(
                f"no header was kept for LUKS container {c.device} (UUID {c.uuid}){kept}",
                why="rescue writes the container's header back from the copy kept at backup time: it holds "
                    "every keyslot, so the old passphrases open the new disk",
                fix="run rescue capture again as root on the machine (it keeps the header, mode 0600) and make "
                    "a new backup; or restore this container by hand with luksFormat and a new key",
            )
        checks.append(CheckLuksKey(uuid=c.uuid, name=name, header=header))
        make.append(RestoreLuksHeader(device=new_device[c.device], uuid=c.uuid, header=header))
        make.append(OpenLuks(device=new_device[c.device], name=name, uuid=c.uuid))
        if c.crypttab is None:
            warnings.append(f"LUKS {c.device} (UUID {c.uuid}) has no line in the captured /etc/crypttab: it is "
                            f"opened as {name} for the restore; the restored system may not open it at boot")
    return LuksRestore(tuple(checks), tuple(make), tuple(warnings), tuple(keyfiles))


def _format(c: LuksDevice, name: str, device: str) -> FormatLuks:
    slot = c.keyslots[0] if c.keyslots else None
    pbkdf = slot.pbkdf if slot else None
    return FormatLuks(device=device, uuid=c.uuid, name=name, version=c.version, cipher=c.cipher,
                      key_bits=c.key_bits, pbkdf=pbkdf, hash=slot.hash if slot and pbkdf == "pbkdf2" else None,
                      label=c.label, data_offset=c.data_offset)


def _crypttab_keyfile(c: LuksDevice) -> str | None:
    """The keyfile crypttab opens the container with, when it is a file of the machine itself
    (not "none", not a device or a path with a key offset: those stay the person's to add)."""
    words = (c.crypttab or "").split()
    keyfile = words[2] if len(words) > 2 else ""
    if not keyfile.startswith("/") or keyfile.startswith("/dev/") or ":" in keyfile:
        return None
    return keyfile


def _new_key_warning(c: LuksDevice, name: str) -> str:
    """What a new master key changes for the person: one keyslot, the old keys gone."""
    words = (c.crypttab or "").split()
    keyfile = words[2] if len(words) > 2 and words[2] not in ("none", "-") else None
    text = (f"LUKS {name} ({c.device}, UUID {c.uuid} kept) gets a new master key and one keyslot, the new "
            f"passphrase: the old passphrases and keyfiles ({len(c.keyslots)} keyslot(s)) no longer open it")
    if keyfile and _crypttab_keyfile(c):
        text += (f"; crypttab opens it with the keyfile {keyfile}, which is added to its keyslots again "
                 "once the files are copied (if the backup holds it)")
    elif keyfile:
        text += (f"; crypttab opens it with the key {keyfile}: add it again after the restore "
                 f"(cryptsetup luksAddKey /dev/disk/by-uuid/{c.uuid} KEYFILE), "
                 "or the machine will not open it at boot")
    return text


def _header_path(c: LuksDevice, folder: str | None) -> str | None:
    if not c.header_file:
        return None
    if posixpath.isabs(c.header_file):
        return c.header_file
    return posixpath.join(folder, c.header_file) if folder else None  # not found where the layout was read
