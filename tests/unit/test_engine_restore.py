"""One restore object behind every face: rescue restore, the wizard and the unattended entry.

Each face only collects answers; the choosing, the refusals and the options
are rescue.engine.restore's. These tests drive the three faces over one bank
and show they go through that object and are refused the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rescue.backups import find_backups
from rescue.engine import restore as engine_restore
from rescue.engine.restore import Restore, RestoreOptions, confirmed, missing_vaults
from rescue.errors import BackupError, PlanRefused
from rescue.target import TargetDisk

from test_backups_dirvish import make_image

GIB = 1 << 30


@pytest.fixture()
def bank(tmp_path) -> Path:
    """Machine vm: vault root has a good image, vault home only a failed one."""
    bank = tmp_path / "bank"
    make_image(bank, "root", "2026-1126-0300", tree="/")
    make_image(bank, "home", "2026-1126-0300", status="error (23) -- partial transfer")
    return bank


@pytest.fixture()
def spy(monkeypatch) -> list[str]:
    """Which faces' choices went through Restore.choose (the one object)."""
    calls: list[str] = []
    choose = Restore.choose

    def recorded(self, machine):
        calls.append(self.options.face)
        return choose(self, machine)

    monkeypatch.setattr(Restore, "choose", recorded)
    return calls


def unattended_config(tmp_path: Path, bank: Path, extra: str = "") -> Path:
    path = tmp_path / "rescue-unattended.toml"
    path.write_text(f'bank = "{bank}"\nclient = "vm"\n{extra}[target]\ndevice = "/dev/null"\n')
    return path


def refusal_of_cli(bank: Path, capsys, *extra: str) -> str:
    from rescue.cli import main

    code = main(["restore", "--bank", str(bank), "--client", "vm", "--target", "/dev/null", "--yes", *extra])
    assert code == BackupError.exit_code
    return capsys.readouterr().err


def refusal_of_wizard(bank: Path, tmp_path: Path) -> BackupError:
    from rescue.tui import RealEngine

    engine = RealEngine(banks=[bank], state_dir=tmp_path / "state")
    (machine,) = engine.discover().machines
    images = tuple(engine.choose(machine).values())  # the defaults the images screen shows
    with pytest.raises(BackupError) as e:
        engine.plan(machine, images, TargetDisk(device="/dev/sdz", size=8 * GIB))
    return e.value


def refusal_of_unattended(bank: Path, tmp_path: Path) -> BackupError:
    from rescue.unattended import load_config, restore

    with pytest.raises(BackupError) as e:
        restore(load_config(unattended_config(tmp_path, bank)), "/dev/null")
    return e.value


def test_a_vault_without_a_good_image_is_refused_the_same_way_by_every_face(bank, tmp_path, capsys, spy):
    cli = refusal_of_cli(bank, capsys)
    wizard = refusal_of_wizard(bank, tmp_path)
    unattended = refusal_of_unattended(bank, tmp_path)
    assert wizard.what == unattended.what and "vault home" in wizard.what and "no usable image" in wizard.what
    assert str(wizard) == str(unattended)
    assert f"rescue restore: {wizard}" in cli  # the same what, why and what to do
    assert "error (23) -- partial transfer" in wizard.why
    assert spy == ["rescue restore", "rescue wizard", "rescue wizard", "rescue unattended restore"]


def test_a_vault_left_out_on_purpose_is_not_refused(bank, tmp_path):
    machine = find_backups([bank]).machine("vm")
    restore = Restore(engine_restore.ImageSource(banks=(bank,)), RestoreOptions(client="vm"))
    choice = restore.choose(machine)
    assert set(choice.images) == {"root"} and "home" in choice.unusable
    assert missing_vaults(machine, choice.images) == ("home",)
    assert [i.vault for i in choice.restorable(skip=("home",))] == ["root"]
    with pytest.raises(PlanRefused, match="every vault is left out"):
        choice.restorable(skip=("home", "root"))
    left_out = Restore(restore.source, RestoreOptions(client="vm", skip_vaults=("home",)))
    assert [i.vault for i in left_out.select().images] == ["root"]


def test_the_three_faces_give_the_same_options(bank, tmp_path):
    """--grow, --fstype, --bootloader, --verify-checksum (the CLI and the wizard) and their config keys."""
    from rescue.commands import restore as restore_command
    from rescue.commands import wizard as wizard_command
    from rescue.commands.plan import read_request
    from rescue.unattended import load_config, restore_options

    words = ["--grow", "/home", "--fstype", "/home=ext4", "--bootloader", "skip"]
    p = argparse.ArgumentParser()
    restore_command.add_arguments(p)
    args = p.parse_args(["--bank", str(bank), "--client", "vm", "--target", "/dev/null",
                         "--skip-vault", "home", *words])
    cli = read_request(args, "restore", bootloader=args.bootloader).restore.options
    w = argparse.ArgumentParser()
    wizard_command.add_arguments(w)
    wizard = wizard_command.options_from_args(w.parse_args(words))
    unattended = restore_options(load_config(unattended_config(
        tmp_path, bank, 'grow = "/home"\nbootloader = "skip"\n[fstype]\n"/home" = "ext4"\n')))
    for o in (cli, wizard, unattended):
        assert (o.grow, o.fstypes, o.bootloader) == ("/home", (("/home", "ext4"),), "skip")
        assert o.plan_options().bootloader is False
    assert (cli.face, wizard.face, unattended.face) == ("rescue restore", "rescue wizard",
                                                         "rescue unattended restore")


def test_the_target_is_confirmed_by_its_name_alone():
    assert confirmed("/dev/sdb", "/dev/sdb") and confirmed(" sdb\n", "/dev/sdb")
    assert confirmed("/dev/disk/by-id/ata-X", "/dev/sdb", ("/dev/disk/by-id/ata-X",))
    assert not confirmed("", "/dev/sdb") and not confirmed("yes", "/dev/sdb") and not confirmed("sdc", "/dev/sdb")
    from rescue.tui.screens.common import confirm_matches

    assert confirm_matches("sdb", "/dev/sdb") and not confirm_matches("y", "/dev/sdb")


def test_a_resume_is_offered_from_the_engine_not_the_face(tmp_path):
    """No plan kept beside a journal: nothing to resume, for the wizard as for the engine."""
    from rescue.tui import RealEngine

    assert Restore(engine_restore.ImageSource(), RestoreOptions(state_dir=tmp_path)).unfinished() is None
    assert RealEngine(state_dir=tmp_path).interrupted() is None
