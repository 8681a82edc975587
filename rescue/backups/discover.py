"""Finding backups and choosing the images a restore uses.

`find_backups()` reads every source given (dirvish banks, a dirvish
master.conf, rsnapshot roots, plain folders) into vaults, and groups vaults
into machines by the client their images name. `choose_images()` picks per
vault the newest good image, or the newest at or before a date; images that
failed or are still being written are never chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from rescue.backups import dirvish, plain, rsnapshot
from rescue.backups.dirvish import Notes, parse_date, printable, shown
from rescue.backups.model import Image, ImageStatus, Machine, Vault
from rescue.errors import BackupError
from rescue.paths import host_paths


@dataclass(frozen=True)
class Backups:
    """Everything found: vaults, machines and what was skipped (notes)."""

    vaults: tuple[Vault, ...]
    machines: tuple[Machine, ...]
    notes: tuple[str, ...] = ()

    def machine(self, client: str) -> Machine:
        """The machine named `client`, or a BackupError listing the ones found."""
        for m in self.machines:
            if m.client == client:
                return m
        known = ", ".join(shown(m.client) for m in self.machines) or "none"
        raise BackupError(
            f"no backups of a machine named {shown(client)}",
            why=f"machines found: {known}",
            fix="pick one of those with --client NAME (rescue list shows them), or give another --bank",
        )


def group_machines(vaults: Sequence[Vault]) -> tuple[Machine, ...]:
    """A machine is the set of vaults whose images name the same client."""
    by_client: dict[str, list[Vault]] = {}
    for v in vaults:
        by_client.setdefault(v.client or "", []).append(v)
    return tuple(Machine(client=c, vaults=tuple(vs)) for c, vs in sorted(by_client.items()))


def find_backups(
    banks: Sequence[Path] = (),
    config: Path | None = None,
    rsnapshot_roots: Sequence[Path] = (),
    trees: Sequence[Path] = (),
    client: str | None = None,
) -> Backups:
    """Read every source. With no source at all, the banks of /etc/dirvish/master.conf.

    `client` names the machine a plain --tree belongs to."""
    notes = Notes()
    all_banks = list(banks)
    if config is not None:
        all_banks.extend(dirvish.banks_from_master(config))
    if not (all_banks or rsnapshot_roots or trees):
        master = host_paths().dirvish_master
        if not master.exists():
            raise BackupError(
                "no backups given",
                why=f"no --bank, --rsnapshot or --tree, and no {master}",
                fix="give the dirvish bank with --bank DIR (e.g. the mounted backup disk's bank folder)",
            )
        all_banks.extend(dirvish.banks_from_master(master))
    vaults: list[Vault] = []
    seen: set[Path] = set()
    for bank in all_banks:
        try:
            real = bank.resolve()
        except (OSError, RuntimeError):
            real = bank
        if real in seen:
            continue
        seen.add(real)
        vaults.extend(dirvish.scan_bank(bank, notes))
    for root in rsnapshot_roots:
        vaults.extend(rsnapshot.scan_root(root, notes))
    for tree in trees:
        vaults.append(plain.plain_vault(tree, client=client))
    return Backups(tuple(vaults), group_machines(vaults), tuple(notes.lines))


# --------------------------------------------------------------------------- choosing


def _moment(text: str) -> datetime | None:
    parsed = parse_date(text)
    return parsed[0] if parsed else None


def date_limit(at: str) -> datetime:
    """The latest moment an image may have been made to count as `at or before`."""
    parsed = parse_date(at)
    if parsed is None:
        raise BackupError(
            f"cannot read the date {shown(at)}",
            why="an image date is written like a dirvish image name or an ISO date",
            fix="use e.g. --image 2026-1126-0300, --image 2026-11-26 or --image 2026-11-26T03:00",
        )
    moment, has_time = parsed
    if not has_time:
        return moment + timedelta(days=1) - timedelta(microseconds=1)
    return moment


def _describe(image: Image) -> str:
    text = f"{shown(image.name)} {image.status.value}"
    if image.status is not ImageStatus.SUCCESS and image.status_text:
        text += f" ({printable(image.status_text)})"
    return text


def choose_image(vault: Vault, at: str | None = None) -> Image:
    """The newest good image of one vault (at or before `at`), or a BackupError.

    `at` is a date (a dirvish image name like 2026-1126-0300 reads as one) or,
    when it is not a date, the exact name of an image (daily.1)."""
    if at is not None and parse_date(at) is None:
        # not a date: the name of an image, e.g. rsnapshot's daily.1
        exact = [i for i in vault.images if i.name == at]
        if exact and not exact[0].usable:
            raise BackupError(
                f"image {shown(at)} of vault {shown(vault.name)} is not usable: {_describe(exact[0])}",
                why="an image whose run failed or did not finish may be missing files",
                fix="pick another image with --image NAME or DATE (rescue list shows them)",
            )
        if exact:
            return exact[0]
    limit = date_limit(at) if at is not None else None
    candidates = []
    for image in vault.images:
        if not image.usable:
            continue
        if limit is not None:
            made = _moment(image.created or "") or _moment(image.name)
            if made is None or made > limit:
                continue
        candidates.append(image)
    if candidates:
        # vault.images is in its source's own order, oldest first (dirvish: the
        # summary's times, then the name; rsnapshot: its rotation), so the last is newest
        return candidates[-1]
    when = f" at or before {shown(at)}" if at is not None else ""
    seen = "; ".join(_describe(i) for i in vault.images[-5:]) or "no images at all"
    raise BackupError(
        f"vault {shown(vault.name)} in {shown(str(vault.bank))} has no usable image{when}",
        why=f"its images: {seen}",
        fix=("pick a later --image DATE, " if at is not None else "")
        + f"run dirvish for this vault again (dirvish --vault {shown(vault.name)}) once its cause is fixed",
    )


def choose_images(machine: Machine, at: str | None = None) -> tuple[Image, ...]:
    """Per vault the newest image whose Status is success, or the newest at or before `at`.

    Failed and incomplete images are never chosen: a vault with none usable
    is a BackupError naming the vault and what to do."""
    if not machine.vaults:
        raise BackupError(f"machine {shown(machine.client)} has no vaults",
                          fix="give the bank that holds its vaults with --bank DIR")
    return tuple(choose_image(v, at) for v in machine.vaults)
