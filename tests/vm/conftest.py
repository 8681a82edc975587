"""VM tier: qemu boots under TCG. It fails, never skips."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rescue.qemu import OVMF_CODE


@pytest.fixture(scope="session", autouse=True)
def _vm_tier_can_run() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    if shutil.which("qemu-system-x86_64") is None:
        problems.append("qemu-system-x86_64 missing (run scripts/setup.sh)")
    if not OVMF_CODE.exists():
        problems.append(f"{OVMF_CODE} missing (package ovmf)")
    if not Path("/dev/loop-control").exists():
        problems.append("no loop devices")
    if problems:
        pytest.fail("vm tier cannot run: " + "; ".join(problems), pytrace=False)


# --- the rescue image and backup disks (issue 4) ------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402

from rescue.devices import make_image_file  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def rescue_image(_vm_tier_can_run: None) -> Path:
    """rescue-root.img, built once and cached in /var/cache/rescue/image across runs.

    It is rebuilt only when the recipe, grub/ or rescue's code changed (a
    few minutes with a warm package cache; see rescue.image.build).
    """
    from rescue.image.build import ensure_image

    if os.environ.get("RESCUE_TEST_IMAGE"):  # an image built elsewhere (its own --cache and --out)
        return Path(os.environ["RESCUE_TEST_IMAGE"])
    image, _ = ensure_image()
    return image


@pytest.fixture()
def backup_disk(rescue_image: Path, tmp_path: Path) -> Callable[..., Path]:
    """Make a backup disk image FILE with `rescue prepare-disk` (the real command)."""

    def make(name: str = "backup.img", size_gib: float = 2.0, table: str = "gpt",
             backup_fs: str = "ext4", label: str = "BACKUP") -> Path:
        disk = make_image_file(tmp_path / name, int(size_gib * (1 << 30)))
        result = subprocess.run(
            [sys.executable, "-m", "rescue", "prepare-disk", str(disk), "--image", str(rescue_image),
             "--table", table, "--backup-fs", backup_fs, "--label", label, "--yes"],
            capture_output=True, text=True, cwd=REPO, timeout=600,
        )
        assert result.returncode == 0, f"prepare-disk failed:\n{result.stdout}\n{result.stderr}"
        return disk

    return make


# --- rescue installed from its wheel (issue 14, point 9) ------------------------------------------

import hashlib  # noqa: E402

VENV_CACHE = Path("/var/cache/rescue/venvs")
# Commands of the installed rescue must import it from its venv, not from a
# tree this test run points PYTHONPATH at.
INSTALLED_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="session")
def installed_rescue(_vm_tier_can_run: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with rescue installed from its wheel (not editable), as a backup server's admin has it.

    The wheel is built from this tree (hatchling's wheels are reproducible);
    the venv is cached in /var/cache/rescue/venvs/SHA (the wheel's sha256), so
    a rerun with the same code reuses it. The newest 3 are kept."""
    import fcntl

    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    with open(VENV_CACHE / ".lock", "w") as lock:  # two workers of the vm tier make it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _installed_rescue(tmp_path_factory)


def _installed_rescue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = tmp_path_factory.mktemp("rescue-wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels),
                    str(REPO)], check=True, timeout=600, env=INSTALLED_ENV)
    wheel = next(wheels.glob("rescue-*.whl"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]
    venv_dir = VENV_CACHE / digest
    if not (venv_dir / ".installed").is_file():
        import venv

        shutil.rmtree(venv_dir, ignore_errors=True)
        venv.EnvBuilder(with_pip=True).create(venv_dir)
        subprocess.run([str(venv_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
                       check=True, timeout=900, env=INSTALLED_ENV)
        (venv_dir / ".installed").write_text(wheel.name + "\n")
    os.utime(venv_dir)
    for old in sorted((d for d in VENV_CACHE.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime,
                      reverse=True)[3:]:
        shutil.rmtree(old, ignore_errors=True)
    where = subprocess.run([str(venv_dir / "bin" / "python"), "-c", "import rescue; print(rescue.__file__)"],
                           capture_output=True, text=True, check=True, env=INSTALLED_ENV, cwd="/").stdout.strip()
    assert Path(where).is_relative_to(venv_dir), f"the venv runs {where}, not its installed rescue"
    return venv_dir


@pytest.fixture()
def run_drill() -> Callable[[list[str]], tuple[int, str]]:
    """Run `rescue drill ARGS` as the user would (a subprocess from the repository), its output
    shown as it comes (a TCG drill takes minutes); gives (exit code, output)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]

    def drill(args: list[str]) -> tuple[int, str]:
        out: list[str] = []
        cmd = [sys.executable, "-m", "rescue", "drill", *args]
        with subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.append(line)
                print(line, end="", flush=True)
            return proc.wait(timeout=60), "".join(out)

    return drill
