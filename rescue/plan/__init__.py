"""The restore plan: a pure function from captured layout, images and target to typed steps."""

from rescue.plan.build import build_plan, vault_mountpoint
from rescue.plan.model import Migration, NewFilesystem, NewSwap, Plan, PlanOptions

__all__ = ["Migration", "NewFilesystem", "NewSwap", "Plan", "PlanOptions", "build_plan", "vault_mountpoint"]
