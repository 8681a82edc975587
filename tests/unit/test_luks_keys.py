"""Where a LUKS key comes from (issue 18): --luks-key NAME=FILE, the unattended config's
[luks_keys], or a passphrase typed hidden on the console; each checked against the kept header
before anything is written, and never shown."""

from __future__ import annotations

import dataclasses
import types

import pytest

from rescue.commands.restore import ask_luks_keys, parse_luks_keys
from rescue.errors import RescueError
from rescue.run import Result
from rescue.steps.luks import AskNewLuksKey, CheckLuksKey, LuksKey, MissingKey, WrongKey, keys_from_files
from rescue.unattended import ConfigError, load_config, restore_options

UUID = "5a3e3c1d-7f7b-4a57-9a55-2a8c6a0f0c01"
CHECK = CheckLuksKey(uuid=UUID, name="cryptroot", header="/backup/web1/rescue/luks-sda3-header.img")
CONFIG = """
bank = "/backup/bank"
client = "web1"
{extra}
[luks_keys]
cryptroot = "keys/web1-root.key"
"{uuid}" = "/media/stick/other.key"
[target]
by_id = "ata-NEW_DISK_1"
"""


def test_the_unattended_config_names_keyfiles_beside_it_never_keys(tmp_path):
    path = tmp_path / "rescue-unattended.toml"
    path.write_text(CONFIG.format(extra="luks_new_key = true", uuid=UUID))
    c = load_config(path)
    assert c.luks_keys == (("cryptroot", str(tmp_path / "keys" / "web1-root.key")), (UUID, "/media/stick/other.key"))
    o = restore_options(c)
    assert o.luks_keys == c.luks_keys and o.luks_new_key and o.plan_options().luks_new_key
    path.write_text(CONFIG.format(extra='luks_new_key = "yes"', uuid=UUID))
    with pytest.raises(ConfigError, match="luks_new_key must be true or false"):
        load_config(path)
    path.write_text(CONFIG.format(extra="", uuid=UUID).replace('"keys/web1-root.key"', "3"))
    with pytest.raises(ConfigError, match=r"\[luks_keys\] must map"):
        load_config(path)


def test_luks_key_options_and_keyfiles_read_as_cryptsetup_reads_them(tmp_path):
    assert parse_luks_keys(["cryptroot=/k/root.key", f"{UUID}=x"]) == (("cryptroot", "/k/root.key"), (UUID, "x"))
    with pytest.raises(RescueError, match="expected NAME=FILE"):
        parse_luks_keys(["/k/root.key"])
    key = tmp_path / "root.key"
    key.write_bytes(b"binary\x00key\n")  # every byte, a trailing newline too: --key-file reads the file whole
    keys = keys_from_files([CHECK], [("cryptroot", str(key))])
    assert keys[UUID].secret() == b"binary\x00key\n" and keys[UUID].source == f"keyfile {key}"
    assert keys_from_files([CHECK], [(UUID, str(key))]) == keys  # by LUKS UUID too
    with pytest.raises(MissingKey, match="opens no LUKS container of that name") as e:
        keys_from_files([CHECK], [("cryptswap", str(key))])
    assert "cryptroot (UUID" in e.value.why
    with pytest.raises(MissingKey, match="cannot be read"):
        keys_from_files([CHECK], [("cryptroot", str(tmp_path / "missing.key"))])


def _session(options):
    return types.SimpleNamespace(restore=types.SimpleNamespace(options=options))


def test_the_console_asks_hidden_says_try_again_and_gives_up_after_three(monkeypatch, capsys):
    import getpass
    import sys

    from rescue.engine.restore import RestoreOptions

    answers = iter(["nope", "right"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt: next(answers))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    calls = []

    def gateway(argv, input=None, check=True, **kw):
        calls.append((list(argv), input))
        return Result(tuple(argv), 0 if input == b"right" else 2, "", "")

    monkeypatch.setattr("rescue.run.run", gateway)
    plan = types.SimpleNamespace(steps=(CHECK,))
    typed = ask_luks_keys(_session(RestoreOptions()), plan, yes=False)
    assert typed[UUID].secret() == b"right" and "right" not in repr(typed)
    assert f"wrong passphrase for LUKS UUID {UUID}, try again" in capsys.readouterr().out
    assert all("right" not in " ".join(argv) and "nope" not in " ".join(argv) for argv, _ in calls)
    answers = iter(["a", "b", "c"])
    with pytest.raises(WrongKey, match="try again"):
        ask_luks_keys(_session(RestoreOptions()), plan, yes=False)
    assert ask_luks_keys(_session(RestoreOptions()), plan, yes=True) == {}  # --yes: nothing is asked
    # a new master key: typed twice, the two must match
    answers = iter(["new one", "new 1", "new one", "new one"])
    new = types.SimpleNamespace(steps=(AskNewLuksKey(uuid=UUID, name="cryptroot"),))
    typed = ask_luks_keys(_session(RestoreOptions()), new, yes=False)
    assert typed[UUID].secret() == b"new one"
    assert "the two passphrases differ" in capsys.readouterr().out


def test_a_key_is_never_shown():
    key = LuksKey("s3cret", "passphrase typed")
    assert "s3cret" not in repr(key) and "s3cret" not in str(key) and "s3cret" not in f"{key}"
    assert "s3cret" not in repr({UUID: key})
    assert dataclasses.is_dataclass(CHECK) and "s3cret" not in repr(CHECK)
