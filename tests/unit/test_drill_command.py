"""`rescue drill` refuses contradictory arguments before it builds or writes anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rescue.cli import main


@pytest.mark.parametrize("argv, said", [
    (["drill", "--client", "web1"], "--client and --image go with --bank"),
    (["drill", "--image", "2026-1125"], "--client and --image go with --bank"),
    (["drill", "--demo", "--bank", "/srv/bank", "--client", "web1"], "--demo and --bank do not go together"),
    (["drill", "--bank", "/srv/bank"], "--bank needs --client NAME"),
    (["drill", "--rsnapshot", "/srv/snapshots"], "--rsnapshot needs --client NAME"),
    (["drill", "--bank", "/srv/bank", "--rsnapshot", "/srv/snapshots", "--client", "web1"],
     "--bank and --rsnapshot do not go together"),
    (["drill", "--demo", "--rsnapshot", "/srv/snapshots", "--client", "web1"], "--demo and --bank do not go together"),
])
def test_contradictions_are_refused_with_the_reason(argv: list[str], said: str, capsys, tmp_path: Path) -> None:
    code = main([*argv, "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 1
    assert said in err if os.geteuid() == 0 else "must run as root" in err
    assert not (tmp_path / "w").exists()


def test_the_firmware_choice_is_checked_by_the_parser(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["drill", "--firmware", "coreboot"])
    assert e.value.code == 2
