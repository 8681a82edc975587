"""Backup disks: prepare-disk's plan of typed steps and its run on the restore's Executor."""

from rescue.prepare.plan import (
    GPT_BIOS_BOOT,
    GPT_ESP,
    GPT_LINUX,
    DiskPlan,
    Part,
    PrepareOptions,
    PreparePlan,
    RescueImage,
    build_prepare_plan,
    build_update_plan,
    min_disk_bytes,
    plan_disk,
)
from rescue.prepare.run import Prepared, check_safe, load_image, prepare_disk

__all__ = [
    "GPT_BIOS_BOOT", "GPT_ESP", "GPT_LINUX", "DiskPlan", "Part", "PrepareOptions", "PreparePlan", "Prepared",
    "RescueImage", "build_prepare_plan", "build_update_plan", "check_safe", "load_image", "min_disk_bytes",
    "plan_disk", "prepare_disk",
]
