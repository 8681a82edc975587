from __future__ import annotations

from dataclasses import dataclass

from rescue.devices import wait_free
from rescue.errors import StepFailed
from rescue.steps.base import Context, Step, sh
from rescue.steps.mkfs import probe, same_uuid


def mkswap_argv(device: str, uuid: str | None, label: str | None) -> list[str]:
    argv = ["mkswap", "-f"]
    if uuid:
        argv += ["-U", uuid]
    if label:
        argv += ["-L", label]
    return argv + [device]


@dataclass(frozen=True)
class MakeSwap(Step):
    """mkswap with the captured UUID and label (fstab and resume= name swap by UUID)."""

    kind = "mkswap"
    device: str
    uuid: str | None
    label: str | None

    @property
    def key(self) -> str:
        return f"mkswap:{self.device}"

    def describe(self) -> str:
        return f"make swap on {self.device} (UUID {self.uuid or 'new'})"

    def script(self) -> list[str]:
        return [sh(*mkswap_argv(self.device, self.uuid, self.label))]

    def run(self, ctx: Context) -> None:
        wait_free(self.device)  # a killed run's swapon or open may still be letting go
        ctx.run(mkswap_argv(self.device, self.uuid, self.label))
        found = probe(ctx, self.device)
        if found.get("TYPE") != "swap":
            raise StepFailed(f"{self.device} shows no swap signature after mkswap", fix="check the disk and rerun")
        if self.uuid and not same_uuid(found.get("UUID"), self.uuid):
            ctx.data()["uuid_changed"] = {"old": self.uuid, "new": found.get("UUID"), "device": self.device,
                                          "mountpoint": "swap"}
            ctx.note(f"{self.device} (swap): UUID changed from {self.uuid} to {found.get('UUID')}")
            ctx.save()
