"""`rescue plan` argument errors, before any disk is looked at."""

from __future__ import annotations

from rescue.cli import main
from rescue.errors import Exit


def test_missing_bank_is_an_error_naming_it(tmp_path, capsys):
    code = main(["plan", "--bank", str(tmp_path / "nope"), "--client", "demo", "--target", "/dev/null"])
    assert code == Exit.ERROR
    err = capsys.readouterr().err
    assert f"rescue plan: bank {tmp_path / 'nope'} is not a folder" in err and "--bank DIR" in err


def test_missing_target_is_an_error_naming_it(tmp_path, capsys):
    code = main(["plan", "--bank", str(tmp_path), "--client", "demo", "--target", str(tmp_path / "sdz")])
    assert code == Exit.ERROR
    assert f"{tmp_path / 'sdz'} does not exist" in capsys.readouterr().err


def test_plan_is_listed_in_rescue_help(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    assert "plan" in capsys.readouterr().out


def test_fstype_option_must_be_mountpoint_equals_type(tmp_path, capsys):
    code = main(["plan", "--bank", str(tmp_path), "--client", "demo", "--target", "/dev/null", "--fstype", "ext4"])
    assert code == Exit.ERROR
    assert "--fstype 'ext4' is not MOUNTPOINT=TYPE" in capsys.readouterr().err
