"""The host paths rescue reads and keeps state in by default, in one place.

Each can be pointed elsewhere with an environment variable, read when it is
needed (not at import), so a test suite, a drill or a person trying rescue out
never reads this machine's dirvish config or restore journals by accident:

    RESCUE_DIRVISH_MASTER     /etc/dirvish/master.conf   the banks `rescue list` and the wizard read
    RESCUE_STATE_DIR          /var/lib/rescue            restore journals, plan.json, logs, reports
    RESCUE_FALLBACK_STATE_DIR /run/rescue/state          journals when the state folder is read-only
    RESCUE_BACKUP_MOUNT       /backup                    where the rescue system mounts the backup partition
    RESCUE_UNATTENDED_CONFIG  /backup/rescue-unattended.toml

Not here on purpose: the disk lock (/run/rescue/locks) and the write-behind
note (/run/rescue-write-behind) guard the machine's real disks and its real
vm.dirty_* settings, so every rescue process on a machine, tests included,
must share them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV = {
    "dirvish_master": ("RESCUE_DIRVISH_MASTER", "/etc/dirvish/master.conf"),
    "state_dir": ("RESCUE_STATE_DIR", "/var/lib/rescue"),
    "fallback_state_dir": ("RESCUE_FALLBACK_STATE_DIR", "/run/rescue/state"),
    "backup_mount": ("RESCUE_BACKUP_MOUNT", "/backup"),
    "unattended_config": ("RESCUE_UNATTENDED_CONFIG", "/backup/rescue-unattended.toml"),
}


@dataclass(frozen=True)
class HostPaths:
    dirvish_master: Path
    state_dir: Path
    fallback_state_dir: Path
    backup_mount: Path
    unattended_config: Path


def host_paths(env: Mapping[str, str] | None = None) -> HostPaths:
    """The defaults, or what RESCUE_* in the environment says instead (an empty value counts as unset)."""
    env = os.environ if env is None else env
    return HostPaths(**{field: Path(env.get(var) or default) for field, (var, default) in ENV.items()})
