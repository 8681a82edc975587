"""qemu for the vm tier and the drill: boot disk images, watch the serial console.

TCG (software emulation) unless RESCUE_QEMU_KVM=1: a stock Debian kernel
hangs under KVM on the build machine. Success is decided by marker lines the
guest prints on its serial console.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from rescue.errors import RescueError
from rescue.run import spawn

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0b-\x1f]")

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


class BootTimeout(RescueError):
    pass


@dataclass
class VM:
    """One qemu guest. Disks are image files (raw); the first one boots."""

    disks: list[Path]
    workdir: Path
    firmware: Firmware = Firmware.BIOS
    memory_mib: int = 1024
    cpus: int = 1
    name: str = "vm"
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def serial_log(self) -> Path:
        return self.workdir / f"{self.name}-serial.log"

    def argv(self) -> list[str]:
        argv = [
            "qemu-system-x86_64", "-machine", "q35" if self.firmware is Firmware.UEFI else "pc",
            "-m", str(self.memory_mib), "-smp", str(self.cpus),
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{self.serial_log}",
            "-nic", "none",
        ]
        if os.environ.get("RESCUE_QEMU_KVM") == "1":
            argv += ["-enable-kvm", "-cpu", "host"]
        if self.firmware is Firmware.UEFI:
            vars_copy = self.workdir / f"{self.name}-OVMF_VARS.fd"
            if not vars_copy.exists():
                vars_copy.write_bytes(OVMF_VARS.read_bytes())
            argv += [
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            ]
        for i, disk in enumerate(self.disks):
            argv += [
                "-drive", f"file={disk},format=raw,if=none,id=d{i},cache=unsafe",
                "-device", f"virtio-blk-pci,drive=d{i},serial=rescue-d{i}"
                + (",bootindex=0" if i == 0 else ""),
            ]
        return argv + self.extra

    def start(self) -> VM:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.serial_log.write_bytes(b"")
        self.proc = spawn(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def console(self) -> str:
        return self.serial_log.read_bytes().decode("utf-8", errors="replace")

    def wait_for(
        self,
        marker: str,
        timeout: float,
        fail_markers: tuple[str, ...] = (),
        progress: Callable[[float, str], None] | None = None,
        every: float = 30.0,
    ) -> float:
        """Seconds until `marker` appears on the serial console; raises on timeout or exit.

        progress(elapsed, last console line) is called every `every` seconds
        while waiting, so a person watching a long TCG boot sees it move.
        """
        start = time.monotonic()
        next_tick = start + every
        while True:
            text = self.console()
            if marker in text:
                return time.monotonic() - start
            if progress is not None and time.monotonic() >= next_tick:
                next_tick += every
                progress(time.monotonic() - start, self.last_line(text))
            for bad in fail_markers:
                if bad in text:
                    raise BootTimeout(f"{self.name}: the guest printed {bad!r}", why=self._tail())
            if self.proc is not None and self.proc.poll() is not None:
                if marker in self.console():
                    return time.monotonic() - start
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BootTimeout(
                    f"{self.name}: qemu exited ({self.proc.returncode}) before {marker!r} appeared",
                    why=(err.strip() + "\n" + self._tail()).strip(),
                    fix=f"read the serial log: {self.serial_log}",
                )
            if time.monotonic() - start > timeout:
                raise BootTimeout(
                    f"{self.name}: {marker!r} did not appear within {timeout:.0f} s",
                    why=self._tail(),
                    fix=f"read the serial log: {self.serial_log}",
                )
            time.sleep(0.5)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BootTimeout(f"{self.name}: the guest did not power off within {timeout:.0f} s",
                              why=self._tail()) from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    @staticmethod
    def last_line(text: str) -> str:
        """The last non-empty console line, without escape sequences (for progress lines)."""
        for line in reversed(text.replace("\r", "\n").splitlines()):
            clean = _ESCAPES.sub("", line).strip()
            if clean:
                return clean[:120]
        return ""

    def _tail(self, lines: int = 15) -> str:
        return "\n".join(self.console().splitlines()[-lines:])

    def __enter__(self) -> VM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
