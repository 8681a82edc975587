"""LUKS containers made again with the header they had: the UUID and every keyslot kept, so the
passphrases and keyfiles that opened the old disk open the new one.

The header comes back from the copy `rescue capture` kept (`luksHeaderRestore`); a person's
key opens the container (`cryptsetup open`), what lay inside is made on /dev/mapper/NAME,
and the container is closed at the end. The key is a secret: it reaches cryptsetup on its
stdin only (`--key-file=-`), never an argv, the log, the journal, the plan or restore.sh.
It is checked against the kept header (`open --test-passphrase --header FILE`, no
device-mapper needed) before anything is written.

The failing old disk may still be attached and open under the same name: a mapping of that
name on another device is the old container, and the restore stops rather than use it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rescue.errors import RescueError, StepFailed, UnsafeTarget
from rescue.steps.base import Context, Step, at_root, confined, let_go, sh


class LuksKey:
    """A passphrase or a keyfile's bytes, held in memory only; its repr shows where it came from."""

    __slots__ = ("_data", "source")

    def __init__(self, data: bytes | str, source: str) -> None:
        self._data = data.encode() if isinstance(data, str) else bytes(data)
        self.source = source  # "keyfile /media/keys/srv.key", "passphrase typed" (never the key)

    def secret(self) -> bytes:
        return self._data

    def __repr__(self) -> str:
        return f"LuksKey({self.source}, hidden)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LuksKey) and other._data == self._data

    def __hash__(self) -> int:
        return hash(self._data)


LuksKeys = Mapping[str, LuksKey]  # LUKS UUID -> its key


class WrongKey(RescueError):
    """The key given for a container opens none of its kept header's keyslots; nothing was written."""


class MissingKey(RescueError):
    """No key was given for a container the restore must open; nothing was written."""


def mapper(name: str) -> str:
    return f"/dev/mapper/{name}"


def key_variable(uuid: str) -> str:
    """The restore.sh variable holding the key typed for a container (never exported)."""
    return "LUKS_KEY_" + "".join(ch if ch.isalnum() else "_" for ch in uuid)


def test_argv(header: str) -> list[str]:
    """Does the key on stdin open a keyslot of the kept header? Reads the file only: no device-mapper."""
    return ["cryptsetup", "open", "--test-passphrase", "--header", header, "--key-file=-", header]


def key_opens(run: Callable[..., Any], header: str, key: LuksKey) -> bool:
    """True when `key` opens the kept header `header` (exit 0); False for a wrong key (exit 2).

    Any other failure (the header unreadable, cryptsetup missing) is raised: it is not the
    person's key that is wrong."""
    found = run(test_argv(header), input=key.secret(), check=False)
    if found.returncode == 0:
        return True
    if found.returncode == 2:
        return False
    raise StepFailed(f"the kept LUKS header {header} cannot be read (cryptsetup exit {found.returncode})",
                     why=(found.stderr or "").strip() or None,
                     fix="check the backup disk (the image's rescue/ folder holds the header), then rerun")


def wrong_key(uuid: str, name: str, key: LuksKey) -> WrongKey:
    return WrongKey(f"wrong passphrase for LUKS UUID {uuid} ({name}), try again",
                    why=f"the {key.source} opens none of the keyslots of the header kept at backup time",
                    fix="give a passphrase or keyfile that opened this container on the old machine "
                        "(any of its keyslots will do); nothing was written")


def key_for(ctx: Any, uuid: str, name: str) -> LuksKey:
    key = ctx.luks_key(uuid) if hasattr(ctx, "luks_key") else None
    if key is None:
        raise MissingKey(f"no key was given for LUKS UUID {uuid} ({name})",
                         why="the restore opens the container with one of its old passphrases or keyfiles",
                         fix=f"give a keyfile with --luks-key {name}=FILE (or luks_keys in the unattended config), "
                             "or type the passphrase in the wizard; nothing was written")
    return key


@dataclass(frozen=True)
class CheckLuksKey(Step):
    """Check the key of one container against its kept header, before anything is written.

    In restore.sh this is where the person types the passphrase (hidden, three tries); the
    open step later feeds the same shell variable to cryptsetup on its stdin."""

    kind = "luks-key"
    persistent = False  # a rerun asks (and checks) again: the key is kept nowhere
    uuid: str
    name: str  # the name it is opened as (/dev/mapper/NAME), the crypttab name
    header: str  # the header kept at backup time (the image's rescue/ folder)

    @property
    def key(self) -> str:
        return f"luks-key:{self.uuid}"

    def describe(self) -> str:
        return f"check the key of LUKS UUID {self.uuid} ({self.name}) against its kept header"

    def script(self) -> list[str]:
        var = key_variable(self.uuid)
        test = sh(*test_argv(self.header))
        return [  # a key set beforehand (the variable in the environment) is checked the same way
            "for try in 1 2 3; do",
            f"    if [ -z \"${{{var}+set}}\" ]; then",
            f"        IFS= read -rs -p {sh(f'passphrase for LUKS UUID {self.uuid} ({self.name}): ')} {var} "
            "< /dev/tty || die \"no terminal to ask for the LUKS passphrase: nothing was written\"",
            "        printf '\\n' >&2",
            "    fi",
            f"    if printf '%s' \"${var}\" | {test} 2>/dev/null; then break; fi",
            f"    say {sh(f'wrong passphrase for LUKS UUID {self.uuid}, try again')}",
            f"    unset {var}",
            "done",
            f"[ -n \"${{{var}+set}}\" ] || die {sh(f'no passphrase opens LUKS UUID {self.uuid}: nothing was written')}",
        ]

    def run(self, ctx: Context) -> None:
        key = key_for(ctx, self.uuid, self.name)
        if not key_opens(ctx.run, self.header, key):
            raise wrong_key(self.uuid, self.name, key)


@dataclass(frozen=True)
class RestoreLuksHeader(Step):
    """Write the kept header onto the new partition (or array): the UUID, cipher, data offset
    and every keyslot as they were."""

    kind = "luks-header"
    device: str  # the new partition or array
    uuid: str
    header: str

    @property
    def key(self) -> str:
        return f"luks-header:{self.uuid}"

    def describe(self) -> str:
        return f"write the kept LUKS header (UUID {self.uuid}, every keyslot) onto {self.device}"

    def restore_argv(self) -> list[str]:
        return ["cryptsetup", "luksHeaderRestore", "--batch-mode", "--header-backup-file", self.header, self.device]

    def script(self) -> list[str]:
        return [f"wipefs -a -q {sh(self.device)}", sh(*self.restore_argv())]

    def run(self, ctx: Context) -> None:
        ctx.run(["wipefs", "-a", "-q", self.device])  # an old signature inside the partition goes first
        ctx.run(self.restore_argv())
        found = ctx.run(["cryptsetup", "luksUUID", self.device], check=False)
        if found.returncode != 0 or found.stdout.strip().lower() != self.uuid.lower():
            raise StepFailed(f"{self.device} shows LUKS UUID {found.stdout.strip() or 'none'} after the header "
                             f"was written, not {self.uuid}", fix="check the disk and rerun the same command")


@dataclass(frozen=True)
class FormatLuks(Step):
    """luksFormat with a new master key (--luks-new-key) and the captured UUID, type, cipher, key
    size, PBKDF, label and data offset: crypttab and the boot still find it by its UUID, and the
    new passphrase (typed twice, on stdin) is its one keyslot. The old header is not reused."""

    kind = "luks-format"
    device: str
    uuid: str
    name: str
    version: int = 2
    cipher: str | None = None
    key_bits: int | None = None
    pbkdf: str | None = None
    hash: str | None = None
    label: str | None = None
    data_offset: int | None = None  # bytes

    @property
    def key(self) -> str:
        return f"luks-format:{self.uuid}"

    def describe(self) -> str:
        return (f"make LUKS{self.version} on {self.device} with a new master key (UUID {self.uuid} kept, "
                "one keyslot: the new passphrase)")

    def format_argv(self) -> list[str]:
        argv = ["cryptsetup", "luksFormat", "--batch-mode", "--type", f"luks{self.version}", "--uuid", self.uuid]
        if self.cipher:
            argv += ["--cipher", self.cipher]
        if self.key_bits:
            argv += ["--key-size", str(self.key_bits)]
        if self.version == 2 and self.pbkdf:
            argv += ["--pbkdf", self.pbkdf]
        if self.hash:
            argv += ["--hash", self.hash]
        if self.version == 2 and self.label:
            argv += ["--label", self.label]
        if self.data_offset:
            argv += ["--offset", str(self.data_offset // 512)]
        return [*argv, "--key-file=-", self.device]

    def script(self) -> list[str]:
        var = key_variable(self.uuid)
        return [f"wipefs -a -q {sh(self.device)}", f"printf '%s' \"${var}\" | {sh(*self.format_argv())}"]

    def run(self, ctx: Context) -> None:
        key = key_for(ctx, self.uuid, self.name)
        ctx.run(["wipefs", "-a", "-q", self.device])
        ctx.run(self.format_argv(), input=key.secret())
        found = ctx.run(["cryptsetup", "luksUUID", self.device], check=False)
        if found.returncode != 0 or found.stdout.strip().lower() != self.uuid.lower():
            raise StepFailed(f"{self.device} shows LUKS UUID {found.stdout.strip() or 'none'} after luksFormat, "
                             f"not {self.uuid}", fix="check the disk and rerun the same command")


@dataclass(frozen=True)
class AddLuksKeyfile(Step):
    """After a new master key: the keyfile crypttab names for the container, back in its keyslots.

    The keyfile is a file of the restored system (/etc/keys/srv.key), so this runs once the
    files are copied; luksAddKey gets the new passphrase on stdin and the keyfile by path
    (never on a command line as bytes). Without it the restored machine cannot open the
    container at boot. A keyfile the backup did not hold (a stick) is said, not fatal."""

    kind = "luks-add-keyfile"
    device: str
    uuid: str
    name: str
    keyfile: str  # the path crypttab gives, in the restored system

    @property
    def key(self) -> str:
        return f"luks-add-keyfile:{self.uuid}"

    def describe(self) -> str:
        return f"add the keyfile {self.keyfile} that crypttab names for LUKS {self.name} to its keyslots"

    def add_argv(self, keyfile: str) -> list[str]:
        return ["cryptsetup", "luksAddKey", "--batch-mode", "--key-file=-", self.device, keyfile]

    def _missing(self) -> str:
        return (f"the keyfile {self.keyfile} of LUKS {self.name} is not in the restored system: add it by hand "
                f"(cryptsetup luksAddKey {self.device} KEYFILE) or the machine will not open {self.name} at boot")

    def script(self) -> list[str]:
        var = key_variable(self.uuid)
        at = at_root(self.keyfile)
        return [f"if [ -f {at} ]; then",
                f"    printf '%s' \"${var}\" | {sh(*self.add_argv('')[:-1])} {at}",
                "else",
                f"    say {shlex.quote('restore.sh: ' + self._missing())}",
                "fi"]

    def run(self, ctx: Context) -> None:
        key = key_for(ctx, self.uuid, self.name)
        path = confined(ctx.root, self.keyfile)
        if not path.is_file():
            ctx.say(self._missing())
            return
        ctx.run(self.add_argv(str(path)), input=key.secret())


@dataclass(frozen=True)
class AskNewLuksKey(Step):
    """restore.sh only asks here, before anything is written: the new passphrase of a container
    made with a new master key, typed twice. The engine's faces ask before the run."""

    kind = "luks-new-key"
    persistent = False  # asked again on a rerun: the passphrase is kept nowhere
    uuid: str
    name: str

    @property
    def key(self) -> str:
        return f"luks-new-key:{self.uuid}"

    def describe(self) -> str:
        return f"ask the new passphrase of LUKS UUID {self.uuid} ({self.name}), typed twice"

    def script(self) -> list[str]:
        var = key_variable(self.uuid)
        return [
            f"if [ -z \"${{{var}+set}}\" ]; then",
            "    for try in 1 2 3; do",
            f"        IFS= read -rs -p {sh(f'new passphrase for LUKS {self.name}: ')} {var} < /dev/tty "
            "|| die \"no terminal to ask for the LUKS passphrase\"",
            "        printf '\\n' >&2",
            f"        IFS= read -rs -p {sh('the same again: ')} again < /dev/tty || die \"no terminal\"",
            "        printf '\\n' >&2",
            f"        if [ -n \"${var}\" ] && [ \"${var}\" = \"$again\" ]; then unset again; break; fi",
            "        say 'the two passphrases differ (or are empty), try again'",
            f"        unset {var} again",
            "    done",
            f"    [ -n \"${{{var}+set}}\" ] || die 'no new passphrase was given: nothing was written'",
            "fi",
        ]

    def run(self, ctx: Context) -> None:
        key_for(ctx, self.uuid, self.name)  # given before the run (typed twice by the face)


@dataclass(frozen=True)
class OpenLuks(Step):
    """cryptsetup open with the person's key on stdin, under the name crypttab gives it."""

    kind = "luks-open"
    # run again on a resume: after a reboot the container must be open before anything uses it
    persistent = False
    device: str
    name: str
    uuid: str

    @property
    def key(self) -> str:
        return f"luks-open:{self.uuid}"

    def describe(self) -> str:
        return f"open LUKS {self.device} (UUID {self.uuid}) as {mapper(self.name)}"

    def open_argv(self) -> list[str]:
        return ["cryptsetup", "open", "--type", "luks", "--key-file=-", self.device, self.name]

    def script(self) -> list[str]:
        var = key_variable(self.uuid)
        return [f"[ -e {sh(mapper(self.name))} ] || printf '%s' \"${var}\" | {sh(*self.open_argv())}",
                "udevadm settle --timeout=30 || true"]

    def run(self, ctx: Context) -> None:
        # noted first: a run killed from here on leaves a mapping the next run closes (this one only)
        ctx.data()["luks"] = {"name": self.name, "device": self.device, "uuid": self.uuid}
        ctx.save()
        if self._open_already(ctx):
            return
        key = key_for(ctx, self.uuid, self.name)
        ctx.run(self.open_argv(), input=key.secret())
        ctx.run(["udevadm", "settle", "--timeout=30"], check=False)

    def _open_already(self, ctx: Context) -> bool:
        """True when NAME is open from this device (a resumed restore). Open from another device,
        it is the old container (someone opened the old disk): the restore stops there."""
        under = mapped_device(ctx.run, self.name)
        if under is None:
            return False
        if os.path.realpath(under) == os.path.realpath(self.device):
            return True
        raise UnsafeTarget(
            f"{mapper(self.name)} is already open, on {under}",
            why=f"that is not {self.device}, the new container: it is likely the old disk's, and nothing may "
                "be written onto the old disks",
            fix=f"close it (cryptsetup close {self.name}, after unmounting what lies on it) or detach the old "
                "disk, then rerun the same command",
        )


def mapped_device(run: Callable[..., Any], name: str) -> str | None:
    """The device under an open mapping (`cryptsetup status NAME`), or None when it is not open."""
    found = run(["cryptsetup", "status", name], check=False)
    if found.returncode != 0:
        return None
    for line in found.stdout.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "device:":
            return words[1]
    return ""


@dataclass(frozen=True)
class CloseLuks(Step):
    """Close the containers the restore opened, once what lies on them is unmounted and its
    volume groups deactivated (before their arrays stop)."""

    kind = "luks-close"
    persistent = False  # a rerun closes them again
    containers: tuple[tuple[str, str], ...]  # (name, new device)

    @property
    def key(self) -> str:
        return "luks-close:" + ",".join(name for name, _ in self.containers)

    def describe(self) -> str:
        return "close LUKS " + ", ".join(mapper(name) for name, _ in self.containers)

    def script(self) -> list[str]:
        return [f"[ ! -e {sh(mapper(name))} ] || cryptsetup close {sh(name)}" for name, _ in reversed(self.containers)]

    def run(self, ctx: Context) -> None:
        for name, device in reversed(self.containers):
            under = mapped_device(ctx.run, name)
            if under is None:
                continue
            if under and os.path.realpath(under) != os.path.realpath(device):
                continue  # not ours: the old disk's container is left as it is
            let_go(ctx, ["cryptsetup", "close", name])


def close_left_container(run: Callable[..., Any], name: str, device: str) -> bool:
    """Close a container an earlier, killed run opened (its journal names it), only if that name
    is still open on that device. Returns whether it was closed."""
    under = mapped_device(run, name)
    if not under or os.path.realpath(under) != os.path.realpath(device):
        return False
    return run(["cryptsetup", "close", name], check=False).returncode == 0


def check_keys(run: Callable[..., Any], steps: Any, keys: LuksKeys) -> None:
    """Every container of a plan has a key, and it opens the kept header: else MissingKey or
    WrongKey, before anything is written (the faces call it before the run starts)."""
    for step in steps:
        if isinstance(step, AskNewLuksKey):
            if keys.get(step.uuid) is None:
                key_for(None, step.uuid, step.name)
            continue
        if isinstance(step, CheckLuksKey):
            key = keys.get(step.uuid)
            if key is None:
                key_for(None, step.uuid, step.name)
            assert key is not None
            if not key_opens(run, step.header, key):
                raise wrong_key(step.uuid, step.name, key)


def containers_needing_keys(steps: Any) -> list[CheckLuksKey]:
    """The containers of a plan whose key is checked against the kept header, in plan order."""
    return [s for s in steps if isinstance(s, CheckLuksKey)]


def containers_needing_new_keys(steps: Any) -> list[AskNewLuksKey]:
    """The containers a plan makes with a new master key (--luks-new-key): a new passphrase each."""
    return [s for s in steps if isinstance(s, AskNewLuksKey)]


def keys_from_files(steps: Any, files: Any) -> dict[str, LuksKey]:
    """The keys named by `--luks-key NAME=FILE` (or the unattended config's luks_keys): NAME is a
    container's open name (crypttab's) or its LUKS UUID; the file's bytes are the key, as
    `cryptsetup --key-file FILE` reads them (a passphrase file: no trailing newline)."""
    containers: list[Any] = [*containers_needing_keys(steps), *containers_needing_new_keys(steps)]
    keys: dict[str, LuksKey] = {}
    for name, file in files:
        found = [c for c in containers if name in (c.name, c.uuid)]
        if not found:
            known = ", ".join(f"{c.name} (UUID {c.uuid})" for c in containers) or "none"
            raise MissingKey(f"--luks-key {name}=...: this restore opens no LUKS container of that name",
                             why=f"the containers it opens are: {known}",
                             fix="name a container by its crypttab name or its LUKS UUID")
        try:
            data = Path(file).read_bytes()
        except OSError as e:
            raise MissingKey(f"the keyfile for LUKS {name} cannot be read: {file}: {e.strerror}",
                             fix="give a readable keyfile (on the backup disk or a stick), then run again") from None
        for c in found:
            keys[c.uuid] = LuksKey(data, f"keyfile {file}")
    return keys
