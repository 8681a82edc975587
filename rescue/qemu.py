"""qemu for the vm tier and the drill: boot disk images, watch the serial console.

TCG (software emulation) unless RESCUE_QEMU_KVM=1: a stock Debian kernel
hangs under KVM on the build machine. Success is decided by marker lines the
guest prints on its serial console.

With qmp=True the VM also has a QMP socket (qemu's machine protocol), so a
test can act on the running machine the way a person acts on real hardware:
`vm.qmp("device_del", id=vm.disk_id(1))` pulls the second disk out while the
guest uses it, and `vm.wait_event("DEVICE_DELETED")` waits until the guest let go.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from rescue.errors import RescueError
from rescue.run import spawn

# Terminal control on a serial console: CSI (colours, cursor moves, `ESC[=3h`),
# OSC (window titles), DCS/APC strings, charset selects (`ESC(B`), other
# two-byte escapes, C1 controls and the C0 controls other than tab and newline.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, ended by BEL or ST
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]+[0-~]"  # charset selects and other escapes with intermediates: ESC ( B, ESC % G
    r"|\x1b[0-~]"  # two-byte escapes: ESC 7, ESC =, ESC c
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"  # other control characters (tab and newline stay)
)


def plain(text: str) -> str:
    """Console text as a person reads it: no terminal escapes, no carriage returns.

    What the drill's report shows from a serial log goes through here: the
    firmware and the Linux console colour their output (`ESC[1mESC[33m...`)."""
    return _ESCAPES.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with its trailing NUL


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


class BootTimeout(RescueError):
    pass


class QMPError(RescueError):
    """qemu refused a QMP command, or its QMP socket did not answer."""


class QMP:
    """A QMP connection: one JSON object a line; events that arrive in between are kept.

    Opened once per VM (qemu serves one client at a time on the socket).
    """

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._buf = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock.connect(str(path))
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise QMPError(f"qemu's QMP socket {path} did not answer", why=str(e)) from None
                time.sleep(0.2)
        greeting = self._read(deadline)
        if "QMP" not in greeting:
            raise QMPError(f"{path} is not a QMP socket", why=json.dumps(greeting)[:300])
        self.command("qmp_capabilities")

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QMPError(f"no answer on {self.path} within {self.timeout:.0f} s")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise QMPError(f"qemu closed its QMP socket {self.path}", why="qemu has exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return dict(json.loads(line))

    def command(self, name: str, **arguments: Any) -> Any:
        """Run one QMP command; its "return" value, or QMPError with qemu's reason."""
        msg: dict[str, Any] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                err = reply["error"]
                raise QMPError(f"qemu refused {name}: {err.get('desc', err)}", why=json.dumps(msg))
            elif "return" in reply:
                return reply["return"]

    def wait_event(self, name: str, timeout: float, **match: Any) -> dict[str, Any]:
        """The first event `name` (whose data has the `match` items), kept or still to come."""
        def fits(e: dict[str, Any]) -> bool:
            data = e.get("data", {})
            return e.get("event") == name and all(data.get(k) == v for k, v in match.items())

        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if fits(e):
                    self.events.remove(e)
                    return e
            try:
                reply = self._read(deadline)
            except QMPError:
                if time.monotonic() >= deadline:
                    raise QMPError(f"qemu sent no {name} event within {timeout:.0f} s",
                                   why=f"waiting for {match or 'any'}") from None
                raise
            if "event" in reply:
                self.events.append(reply)

    def close(self) -> None:
        self._sock.close()


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
    qmp_socket: bool = False  # also serve QMP (see qmp()), e.g. to unplug a disk
    serial_prefix: str = "rescue-d"  # disk i's serial: PREFIX+i (/dev/disk/by-id/virtio-PREFIXi)
    proc: subprocess.Popen[bytes] | None = None
    _qmp: QMP | None = field(default=None, repr=False)
    _sockets: Path | None = field(default=None, repr=False)

    @staticmethod
    def disk_id(i: int) -> str:
        """The qemu device id of disk number i (the order of `disks`), for device_del."""
        return f"disk{i}"

    def socket_file(self, what: str) -> Path:
        """Where the VM's socket WHAT lives: beside its logs when that path is short enough,
        else in a short folder of its own under /tmp (removed by kill()).

        A unix socket's path holds at most 107 bytes, and a drill's workdir inside a
        test's tmp_path is longer than that: qemu then cannot make the socket at all."""
        near = self.workdir / f"{self.name}-{what}.sock"
        if len(os.fsencode(near)) <= SOCKET_PATH_MAX:
            return near
        if self._sockets is None:
            self._sockets = Path(tempfile.mkdtemp(prefix="rescue-vm-"))
        return self._sockets / f"{what}.sock"

    @property
    def qmp_path(self) -> Path:
        return self.socket_file("qmp")

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run a QMP command on the running VM (needs qmp_socket=True); its return value."""
        if not self.qmp_socket:
            raise QMPError(f"{self.name} was started without a QMP socket", fix="make the VM with qmp_socket=True")
        if self._qmp is None:
            self._qmp = QMP(self.qmp_path)
        return self._qmp.command(command, **arguments)

    def wait_event(self, name: str, timeout: float = 60.0, **match: Any) -> dict[str, Any]:
        """Wait for a QMP event, e.g. wait_event("DEVICE_DELETED", device="disk1")."""
        if self._qmp is None:
            self.qmp("query-status")
        assert self._qmp is not None
        return self._qmp.wait_event(name, timeout, **match)

    def unplug_disk(self, i: int, timeout: float = 120.0) -> float:
        """Pull disk number i out of the running guest (hot-unplug); seconds until the guest let go.

        qemu asks the guest to release the device (ACPI eject on the pc machine); the disk
        is gone once DEVICE_DELETED arrives."""
        t0 = time.monotonic()
        self.qmp("device_del", id=self.disk_id(i))
        self.wait_event("DEVICE_DELETED", timeout, device=self.disk_id(i))
        return time.monotonic() - t0

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
        if self.qmp_socket:
            argv += ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
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
                "-device", f"virtio-blk-pci,drive=d{i},serial={self.serial_prefix}{i},id={self.disk_id(i)}"
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

    def wait_for_pattern(self, pattern: str, timeout: float, since: int = 0) -> re.Match[str]:
        """The first match of a regular expression in the console (from character `since` on).

        For answers that the guest may also echo as typed: "RESTORE-EXIT=(\\d+)"
        matches the printed exit code, not the typed "echo RESTORE-EXIT=$?"."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.console().replace("\r", ""), since)
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                raise BootTimeout(f"{self.name}: qemu exited before {pattern!r} appeared", why=self._tail())
            if time.monotonic() > deadline:
                raise BootTimeout(f"{self.name}: {pattern!r} did not appear within {timeout:.0f} s",
                                  why=self._tail(), fix=f"read the serial log: {self.serial_log}")
            time.sleep(0.5)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BootTimeout(f"{self.name}: the guest did not power off within {timeout:.0f} s",
                              why=self._tail()) from None

    def kill(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._sockets is not None:
            shutil.rmtree(self._sockets, ignore_errors=True)
            self._sockets = None

    @staticmethod
    def last_line(text: str) -> str:
        """The last non-empty console line, without escape sequences (for progress lines)."""
        for line in reversed(plain(text).splitlines()):
            clean = line.strip()
            if clean:
                return clean[:120]
        return ""

    def _tail(self, lines: int = 15) -> str:
        """The console's last lines, for errors and the drill's report (escapes stripped)."""
        return "\n".join(plain(self.console()).splitlines()[-lines:])

    def __enter__(self) -> VM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
