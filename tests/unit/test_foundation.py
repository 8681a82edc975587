"""The gateway, the JSON form and device naming: the pieces everything uses."""

from __future__ import annotations

import pytest

from rescue.cli import main
from rescue.devices import disk_of, partition_path
from rescue.errors import Exit, LayoutError
from rescue.layout import Boot, BootMode, Disk, Filesystem, Layout, Partition, PartitionTable, RootMeta
from rescue.run import CommandError, CommandNotFound, run


def test_run_captures_output_and_uses_c_locale():
    r = run(["sh", "-c", 'echo "$LANG"; echo err >&2'])
    assert r.stdout == "C.UTF-8\n"
    assert r.stderr == "err\n"
    assert r.returncode == 0


def test_run_refuses_shell_strings():
    with pytest.raises(TypeError):
        run("echo hi")  # type: ignore[arg-type]


def test_run_raises_typed_error_with_argv_and_stderr():
    with pytest.raises(CommandError) as e:
        run(["sh", "-c", "echo broken >&2; exit 3"])
    assert e.value.returncode == 3
    assert e.value.argv == ("sh", "-c", "echo broken >&2; exit 3")
    assert "broken" in str(e.value)


def test_missing_command_is_reported_as_not_found():
    with pytest.raises(CommandNotFound) as e:
        run(["no-such-command-rescue"])
    assert e.value.returncode == 127
    assert "setup.sh" in str(e.value)


@pytest.mark.parametrize(
    ("disk", "n", "part"),
    [("/dev/sda", 1, "/dev/sda1"), ("/dev/nvme0n1", 2, "/dev/nvme0n1p2"),
     ("/dev/loop7", 3, "/dev/loop7p3"), ("/dev/vdb", 12, "/dev/vdb12")],
)
def test_partition_names_round_trip(disk, n, part):
    assert partition_path(disk, n) == part
    assert disk_of(part) == disk


def _layout() -> Layout:
    table = PartitionTable(
        label="gpt", device="/dev/sda", label_id="A1B2C3D4-0000-4000-8000-000000000001",
        first_lba=2048, last_lba=41943006,
        partitions=(Partition("/dev/sda1", 2048, 1048576, "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                              uuid="11111111-2222-4333-8444-555555555555", name="root"),),
    )
    return Layout(
        client="demo", captured_at="2026-11-26T03:00:00Z",
        os_release={"ID": "debian", "VERSION_ID": "12"},
        disks=(Disk("/dev/sda", 21474836480, table=table),),
        filesystems=(Filesystem("/dev/sda1", "ext4", uuid="u-1", label="root", mountpoint="/",
                                root=RootMeta("/", 0o755, 0, 0)),),
        boot=Boot(BootMode.UEFI, esp="/boot/efi"),
    )


def test_layout_json_round_trips():
    layout = _layout()
    assert Layout.loads(layout.dumps()) == layout


@pytest.mark.parametrize(
    ("text", "words"),
    [("", "not valid JSON"), ("[]", "JSON object"), ('{"schema": 99}', "schema version"),
     ('{"schema": 1, "client": "x", "captured_at": "t", "bogus": 1}', "unknown key 'bogus'"),
     ('{"schema": 1, "client": 5, "captured_at": "t"}', "expected str")],
)
def test_bad_layout_json_names_file_and_problem(text, words):
    with pytest.raises(LayoutError) as e:
        Layout.loads(text, file="/bank/v/i/rescue/layout.json")
    assert "/bank/v/i/rescue/layout.json" in str(e.value)
    assert words in str(e.value)


def test_cli_without_command_prints_help_and_exits_usage(capsys):
    assert main([]) == Exit.USAGE
    assert "usage: rescue" in capsys.readouterr().out


def test_timeout_is_a_command_error_not_a_traceback():
    from rescue.run import CommandTimedOut

    with pytest.raises(CommandTimedOut) as e:
        run(["sleep", "5"], timeout=0.2)
    assert e.value.returncode == 124
    assert "did not finish within 0.2 s" in str(e.value)


def test_a_closed_pipe_ends_a_command_quietly(tmp_path):
    """`rescue list --json | head` ends as a Unix tool does: no BrokenPipeError traceback."""
    import subprocess
    import sys

    tree = tmp_path / "oldbox"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("oldbox\n")
    p = subprocess.Popen([sys.executable, "-m", "rescue", "list", "--tree", str(tree), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before the first line is written
    err = p.stderr.read().decode()
    assert p.wait() == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_layout_from_a_newer_rescue_says_so_and_how_to_update():
    """The nightly capture runs the backup server's rescue, the restore the backup disk's:
    a key this rescue does not know means a newer one wrote the file."""
    text = '{"schema": 1, "client": "x", "captured_at": "t", "lvm": {}}'
    with pytest.raises(LayoutError) as e:
        Layout.loads(text, file="/bank/v/i/rescue/layout.json")
    assert "unknown key 'lvm'" in str(e.value) and "newer rescue" in str(e.value)
    assert "prepare-disk --update" in e.value.fix
