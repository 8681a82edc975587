"""scripts/rsnapshot.conf.example is what rsnapshot itself accepts (it demands tabs), with the capture line."""

from __future__ import annotations

import sys
from pathlib import Path

from rescue.run import run

EXAMPLE = Path(__file__).resolve().parents[2] / "scripts" / "rsnapshot.conf.example"


def test_rsnapshot_configtest_accepts_the_example(tmp_path: Path) -> None:
    rescue = Path(sys.executable).parent / "rescue"  # an executable that exists here, as backup_script wants
    text = (EXAMPLE.read_text().replace("/backup/rsnapshot/", f"{tmp_path}/root/")
            .replace("/var/run/rsnapshot.pid", f"{tmp_path}/pid").replace("/usr/local/bin/rescue", str(rescue)))
    conf = tmp_path / "rsnapshot.conf"
    conf.write_text(text)
    result = run(["rsnapshot", "-c", str(conf), "configtest"], check=False)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stdout + result.stderr
    assert "backup_script\t/usr/local/bin/rescue capture --client localhost --out .\t.rescue/localhost/" \
        in EXAMPLE.read_text()
