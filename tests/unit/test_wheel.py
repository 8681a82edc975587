"""The wheel carries grub/ and image-builder/: install it (not editable) into a fresh venv and use them.

Network-free: the wheels come from `pip wheel` (the project and its
dependencies, from pip's cache and the machine's configured indexes), the
venv installs with --no-index.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(REPO)],
                   check=True, timeout=600)
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
                    "--find-links", str(wheels), "rescue"], check=True, timeout=600)
    return env_dir


def test_wheel_holds_grub_templates_and_the_image_recipe(installed: Path, tmp_path: Path):
    wheel = next((installed.parent / "wheels").glob("rescue-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "rescue/_data/grub/grub.cfg.j2" in names
    assert "rescue/_data/image-builder/recipe.toml" in names
    assert "rescue/_data/image-builder/overlay/usr/local/sbin/rescue-console" in names


def test_installed_rescue_runs_and_renders_grub_from_its_own_data(installed: Path, tmp_path: Path):
    help_text = subprocess.run([str(installed / "bin" / "rescue"), "--help"], capture_output=True, text=True,
                               cwd=tmp_path, check=True).stdout
    assert "prepare-disk" in help_text
    assert subprocess.run([str(installed / "bin" / "rescue-image"), "build", "--help"], capture_output=True,
                          cwd=tmp_path).returncode == 0
    code = (
        "import rescue.resources as r, rescue.image.grubcfg as g, rescue.image.recipe as rc\n"
        "print(r.grub_dir())\n"
        "print(rc.load().source)\n"
        "print(g.render(g.GrubConfig()).count('menuentry'))\n"
    )
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout.split("\n")
    site = installed / "lib"
    assert Path(out[0]).is_relative_to(site) and out[0].endswith("rescue/_data/grub"), out[0]
    assert Path(out[1]).is_relative_to(site) and out[1].endswith("rescue/_data/image-builder/recipe.toml")
    assert out[2] == "4"
    assert not Path(out[0]).is_relative_to(REPO), "the installed copy, not the source tree"
