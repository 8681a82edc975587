"""A rescue VM driven through its shell: the serial console is a socket the drill types into.

The layered demo machines (LVM, md, LUKS) cannot be built on a host whose
kernel has no device-mapper and no md, so the drill boots the rescue image's
"Rescue shell" entry with the machine's blank disk attached and builds the
machine there, one command at a time. The serial log file still keeps all
the guest said, as for every other drill boot.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

from rescue.qemu import VM, BootTimeout

BOOT_TIMEOUT = 600  # a TCG boot of the rescue disk takes about 60 s; under load, much more


class ShellVM(VM):
    """A VM whose serial console is a socket (typed into) and still logged to the usual file."""

    @property
    def socket_path(self) -> Path:
        return self.socket_file("serial")

    def argv(self) -> list[str]:
        argv = super().argv()
        i = argv.index("-serial")
        argv[i:i + 2] = ["-chardev", (f"socket,id=ser0,path={self.socket_path},server=on,wait=off,"
                                      f"logfile={self.serial_log},logappend=on"),
                         "-serial", "chardev:ser0"]
        return argv

    def connect(self) -> None:
        for _ in range(100):
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(self.socket_path))
                break
            except OSError:
                self.sock.close()
                if self.proc is not None and self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
                    raise BootTimeout(f"qemu for {self.name} exited at once (status {self.proc.returncode})",
                                      why=err or "qemu said nothing on stderr") from None
                time.sleep(0.2)
        else:
            raise BootTimeout(f"the serial socket of {self.name} never appeared",
                              why=f"qemu did not make {self.socket_path}")
        threading.Thread(target=self._drain, daemon=True).start()  # the log file keeps what it says

    def _drain(self) -> None:
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass

    def type(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def type_secret(self, data: bytes) -> None:
        """A passphrase typed at a prompt: sent to the guest only, never logged."""
        self.sock.sendall(data + b"\n")

    def ask(self, command: str, timeout: float = 120) -> str:
        """Run a shell command in the guest; its output between two unique markers."""
        tag = f"Q{time.monotonic_ns()}"
        self.type(f"echo {tag}-BEGIN; {command}; echo {tag}-END")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.console().replace("\r", "")
            # the typed line holds "TAG-BEGIN;" (no newline after it): only the output matches
            m = re.search(rf"{tag}-BEGIN\n(.*?){tag}-END\n", text, re.DOTALL)
            if m:
                return m.group(1)
            time.sleep(1)
        raise BootTimeout(f"no answer from {self.name} to {command!r} in {timeout:.0f} s",
                          why=self.console()[-2000:])


def boot_shell(vm: ShellVM, timeout: float = BOOT_TIMEOUT) -> None:
    """Connect, wait for the rescue shell, and make its prompt plain."""
    vm.connect()
    vm.wait_for("RESCUE-READY", timeout, fail_markers=("Kernel panic",))
    vm.wait_for("Rescue shell on", 60)
    time.sleep(2)
    vm.type("export PS1='$ ' TERM=dumb; stty -echo")
    time.sleep(1)
