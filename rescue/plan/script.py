"""restore.sh: the plan as a shell script a person can read, edit and run by hand.

Rendered from rescue/templates/restore.sh.j2. Each step's lines come from the
step itself (Step.script()); the template adds the safety checks at the top
and a marker per step so a rerun resumes after the last finished step. A
marker of a step that writes the disk's table or a filesystem holds what the
step left (blkid's PTUUID or UUID): a rerun resumes only on a disk that still
shows it, and a finished restore's markers never make a new run skip steps.
"""

from __future__ import annotations

import functools
import os
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import jinja2

from rescue.engine.journal import disk_check_of
from rescue.paths import host_paths
from rescue.resources import templates_dir
from rescue.steps import MountFilesystem, Step

if TYPE_CHECKING:
    from rescue.plan.model import Plan

TEMPLATE = "restore.sh.j2"
MOUNT_BASE = "/mnt/rescue"


@dataclass(frozen=True)
class _Rendered:
    number: int
    describe: str
    marker: str  # done-<marker> in $STATE
    guard: str  # "marker", "mount" (checked live) or "always"
    mountpoint: str  # shell words, for mount guards
    lines: tuple[str, ...]
    check: str = ""  # "DEVICE FIELD" (shell words) whose blkid value the marker records, or ""


def marker_name(key: str) -> str:
    """A file name for a step key; distinct keys give distinct names ('mount:/home' -> 'mount:%2Fhome')."""
    return quote(key, safe=":@+,=-_.")


def at_root(mountpoint: str) -> str:
    """A mount point under $ROOT, as shell words: "$ROOT"'/home'."""
    rel = mountpoint.strip("/")
    return '"$ROOT"' + (shlex.quote("/" + rel) if rel else "")


def step_lines(step: Step) -> tuple[str, ...]:
    return tuple(step.script())


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["q"] = lambda value: shlex.quote(str(value))
    return env.get_template(TEMPLATE)


def render_script(plan: Plan) -> str:
    name = os.path.basename(plan.target.device) or "disk"
    state = plan.options.state_dir or f"{host_paths().state_dir}/{name}"
    steps = []
    for i, step in enumerate(plan.steps, 1):
        if isinstance(step, MountFilesystem):
            guard = "mount"
        elif not getattr(step, "persistent", True):
            guard = "always"
        else:
            guard = "marker"
        check = disk_check_of(step) if guard == "marker" else None
        steps.append(_Rendered(
            number=i, describe=step.describe().replace("\n", " "), marker=marker_name(step.key),
            guard=guard, mountpoint=at_root(step.mountpoint) if isinstance(step, MountFilesystem) else "",
            lines=step_lines(step),
            check=f"{shlex.quote(check[0])} {check[1]}" if check else "",
        ))
    return _template().render(
        client=plan.client.replace("\n", " "),
        target=plan.target.device,
        disks=[{"source": d.source.device, "target": d.target.device, "size": int(d.target.size),
                "serial": (d.target.serial or "").replace(" ", "")} for d in plan.disks],
        captured_at=plan.captured_at,
        plan_id=plan.fingerprint,
        state=state,
        root=f"{MOUNT_BASE}/{name}/root",
        work=f"{MOUNT_BASE}/{name}/work",
        steps=steps,
    )
