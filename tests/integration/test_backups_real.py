"""Real dirvish backups of a small folder, then `rescue list` over the bank.

dirvish reads its master configuration from the fixed path
/etc/dirvish/master.conf (CONFDIR in /usr/sbin/dirvish). To leave the host's
/etc alone, each run happens in a private mount namespace (unshare -m) where
the test's own config folder is bind-mounted over /etc/dirvish; the mount
vanishes with the namespace. dirvish itself is the unmodified Debian one.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from rescue.backups import ImageStatus, choose_images, find_backups
from rescue.backups.dirvish import parse_config
from rescue.cli import main
from rescue.errors import BackupError
from rescue.run import run

FIX = Path(__file__).parent.parent / "unit" / "fixtures" / "dirvish"
HOOK = """#!/bin/sh
# post-server hook: what `rescue capture` does, reduced to the file rescue list looks for
mkdir -p "$DIRVISH_DEST/../rescue" && echo '{}' > "$DIRVISH_DEST/../rescue/layout.json"
"""


def dirvish(conf: Path, *args: str, check: bool = True) -> int:
    if not Path("/etc/dirvish").is_dir():
        pytest.fail("/etc/dirvish is missing: the dirvish package is not installed (scripts/setup.sh)")
    r = run(["unshare", "-m", "--", "sh", "-c", 'mount --bind "$1" /etc/dirvish && shift && exec dirvish "$@"',
             "sh", str(conf), *args], check=False)
    if check and r.returncode != 0:
        pytest.fail(f"dirvish {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r.returncode


@pytest.fixture(scope="module")
def real_bank(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dirvish")
    src, bank, conf = tmp / "src", tmp / "bank", tmp / "conf"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_text("hello\n")
    (src / "sub" / "b").write_bytes(b"x" * 1000)
    conf.mkdir()
    (conf / "master.conf").write_text(f"bank:\n\t{bank}\nexclude:\n\tlost+found/\nimage-default: %Y-%m%d-%H%M\n")
    hook = tmp / "hook.sh"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    client = socket.gethostname()
    (bank / "home" / "dirvish").mkdir(parents=True)
    (bank / "home" / "dirvish" / "default.conf").write_text(
        f"client: {client}\ntree: {src}\nxdev: 1\nindex: none\npost-server: {hook}\n")
    (bank / "gone" / "dirvish").mkdir(parents=True)
    (bank / "gone" / "dirvish" / "default.conf").write_text(
        f"client: {client}\ntree: {tmp / 'no-such-folder'}\nindex: none\n")

    dirvish(conf, "--vault", "home", "--init", "--image", "2026-1125-0300")
    (src / "c").write_text("added the second night\n")
    dirvish(conf, "--vault", "home", "--image", "2026-1126-0300")
    failed = dirvish(conf, "--vault", "gone", "--init", "--image", "2026-1126-0300", check=False)
    assert failed != 0, "dirvish should fail for a vault whose tree does not exist"
    return tmp, client


def test_real_summary_matches_the_fixture(real_bank):
    tmp, client = real_bank
    real = parse_config((tmp / "bank" / "home" / "2026-1126-0300" / "summary").read_text())
    kept = parse_config((FIX / "summary.success").read_text())
    assert set(kept) <= set(real), "the unit fixture no longer looks like what dirvish writes"
    assert real["client"] == client and real["Status"] == "success"
    assert real["Reference"] == "2026-1125-0300"


def test_list_json_shows_the_real_bank(real_bank, capsys):
    tmp, client = real_bank
    assert main(["list", "--bank", str(tmp / "bank"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    [machine] = data["machines"]
    assert machine["client"] == client
    vaults = {v["name"]: v for v in machine["vaults"]}
    assert set(vaults) == {"home", "gone"}

    home = vaults["home"]
    assert home["source"] == str(tmp / "src") and home["chosen"] == "2026-1126-0300"
    assert [i["name"] for i in home["images"]] == ["2026-1125-0300", "2026-1126-0300"]
    assert [i["status"] for i in home["images"]] == ["success", "success"]
    assert [i["size"] for i in home["images"]] == [6 + 1000, 6 + 1000 + 23]  # rsync's Total file size
    assert all(i["layout"] for i in home["images"])  # the post-server hook wrote rescue/layout.json
    assert "xdev" in home["images"][1]["flags"]
    assert home["images"][1]["reference"] == "2026-1125-0300"
    assert (Path(home["images"][1]["tree"]) / "c").is_file()

    gone = vaults["gone"]
    [image] = gone["images"]
    assert image["status"] == "failed" and image["status_text"].startswith("error (23)")
    assert gone["chosen"] is None and image["layout"] is False


def test_list_text_and_master_conf(real_bank, capsys):
    tmp, client = real_bank
    assert main(["list", "--config", str(tmp / "conf" / "master.conf")]) == 0
    out = capsys.readouterr().out
    assert f"Machine {client}: 2 vaults" in out
    assert "FAILED" in out and "no usable image: a restore of this vault is refused" in out


def test_choose_refuses_the_failed_vault(real_bank):
    tmp, client = real_bank
    machine = find_backups([tmp / "bank"]).machine(client)
    with pytest.raises(BackupError, match="vault gone .* has no usable image") as e:
        choose_images(machine)
    assert "dirvish --vault gone" in e.value.fix
    home = next(v for v in machine.vaults if v.name == "home")
    assert [i.status for i in home.images] == [ImageStatus.SUCCESS, ImageStatus.SUCCESS]
    assert home.images[0].layout_dir == tmp / "bank" / "home" / "2026-1125-0300" / "rescue"
