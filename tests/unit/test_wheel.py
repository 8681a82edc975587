"""The wheel carries grub/ and image-builder/: install it (not editable) into a fresh venv and use them.

Network-free: the wheels come from `pip wheel` (the project and its
dependencies, from pip's cache and the machine's configured indexes), the
venv installs with --no-index.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The venv's python must import its installed rescue, not the tree a test run
# points PYTHONPATH at.
VENV_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(REPO)],
                   check=True, timeout=600)
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
                    "--find-links", str(wheels), "rescue"], check=True, timeout=600, env=VENV_ENV)
    return env_dir


def test_wheel_holds_grub_templates_and_the_image_recipe(installed: Path, tmp_path: Path):
    wheel = next((installed.parent / "wheels").glob("rescue-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "rescue/_data/grub/grub.cfg.j2" in names
    assert "rescue/_data/image-builder/recipe.toml" in names
    assert "rescue/_data/image-builder/overlay/usr/local/sbin/rescue-console" in names


def test_installed_rescue_runs_and_renders_grub_from_its_own_data(installed: Path, tmp_path: Path):
    help_text = subprocess.run([str(installed / "bin" / "rescue"), "--help"], capture_output=True, text=True,
                               cwd=tmp_path, check=True, env=VENV_ENV).stdout
    assert "prepare-disk" in help_text
    assert subprocess.run([str(installed / "bin" / "rescue-image"), "build", "--help"], capture_output=True,
                          cwd=tmp_path, env=VENV_ENV).returncode == 0
    code = (
        "import rescue.resources as r, rescue.image.grubcfg as g, rescue.image.recipe as rc\n"
        "print(r.grub_dir())\n"
        "print(rc.load().source)\n"
        "print(g.render(g.GrubConfig()).count('menuentry'))\n"
    )
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True, env=VENV_ENV).stdout.split("\n")
    site = installed / "lib"
    assert Path(out[0]).is_relative_to(site) and out[0].endswith("rescue/_data/grub"), out[0]
    assert Path(out[1]).is_relative_to(site) and out[1].endswith("rescue/_data/image-builder/recipe.toml")
    assert out[2] == "4"
    assert not Path(out[0]).is_relative_to(REPO), "the installed copy, not the source tree"


def _contents(wheel: Path) -> dict[str, str]:
    """name -> sha256 of every file in a wheel but its RECORD (which lists the others)."""
    with zipfile.ZipFile(wheel) as z:
        return {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist() if not n.endswith(".dist-info/RECORD")}


def test_image_wheel_step_works_from_an_installed_rescue_and_packs_the_same_files(installed: Path, tmp_path: Path):
    """rescue-image build from a wheel install (no source tree): its wheel step repacks the installed rescue.

    Before: `pip wheel .../site-packages` failed ("Neither 'setup.py' nor 'pyproject.toml' found")."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import rescue.image.build as b\n"
        "wheels = b._build_wheels(b._PACKAGE_DIR.parent, Path(sys.argv[1]), print)\n"
        "print('WHEEL', next(w for w in wheels if w.name.startswith('rescue-')))\n"
        "print('FROM', b._PACKAGE_DIR)\n"
    )
    result = subprocess.run([str(installed / "bin" / "python"), "-c", code, str(tmp_path / "wheels")],
                            capture_output=True, text=True, cwd=tmp_path, env=VENV_ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("WHEEL ", "FROM ")))
    assert Path(lines["FROM"]).is_relative_to(installed), "the installed rescue ran, not the source tree"
    repacked = Path(lines["WHEEL"])
    original = next((installed.parent / "wheels").glob("rescue-*.whl"))
    assert repacked.name == original.name
    want, got = _contents(original), _contents(repacked)
    assert sorted(got) == sorted(want)
    assert got == want, [n for n in want if got.get(n) != want[n]]
    assert "rescue/_data/scripts/unattended-restore" in got, "the image's Unattended restore entry needs it"

    # what the image build does with it: installable offline, and it installs the same files
    target = tmp_path / "site"
    subprocess.run([str(installed / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-compile", "--target", str(target), str(repacked)], check=True, env=VENV_ENV, timeout=300)
    site = next((installed / "lib").glob("python3*/site-packages"))
    for name in want:
        if name.startswith("rescue/"):
            assert (target / name).read_bytes() == (site / name).read_bytes(), name
