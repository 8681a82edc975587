"""qemu's sockets in a deep working folder (a bug from the vm tier).

A drill run from a test works in pytest's tmp_path, and the bank drill's
workdir there was 110 bytes deep: the rescue shell VM's serial socket path was
longer than a unix socket's 107 bytes, qemu could not make it, and the drill
failed with "qemu did not make ...-serial.sock". A real qemu starts here with
no disk (its firmware finds nothing to boot, which is enough to talk to it).
"""

from __future__ import annotations

from pathlib import Path

from rescue.drill.shell_vm import ShellVM
from rescue.qemu import SOCKET_PATH_MAX


def _deep(tmp_path: Path) -> Path:
    deep = tmp_path / ("a-folder-name-as-long-as-a-test-name-" * 4)
    assert len(str(deep / "add-report-serial.sock")) > SOCKET_PATH_MAX
    return deep


def test_a_shell_vm_in_a_deep_workdir_gets_its_serial_and_qmp_sockets(tmp_path: Path) -> None:
    vm = ShellVM(disks=[], workdir=_deep(tmp_path), name="add-report", qmp_socket=True)
    try:
        vm.start()
        vm.connect()  # raised BootTimeout before the sockets moved out of the deep folder
        assert vm.qmp("query-status")["status"] in ("running", "prelaunch")
        sockets = vm.socket_path.parent
        assert sockets != vm.workdir and len(str(vm.socket_path)) <= SOCKET_PATH_MAX
        assert vm.serial_log.parent == vm.workdir  # the log stays with the drill's other logs
    finally:
        vm.kill()
    assert not sockets.exists()


def test_a_short_workdir_keeps_the_sockets_beside_the_logs(tmp_path: Path) -> None:
    vm = ShellVM(disks=[], workdir=tmp_path, name="vm")
    assert vm.socket_path == tmp_path / "vm-serial.sock"
    assert vm.qmp_path == tmp_path / "vm-qmp.sock"
