"""Finding backups: dirvish banks, rsnapshot roots and plain folders."""

from rescue.backups.model import Image, ImageStatus, Machine, SourceKind, Vault
from rescue.backups.discover import Backups, choose_image, choose_images, find_backups, group_machines

__all__ = [
    "Backups",
    "Image",
    "ImageStatus",
    "Machine",
    "SourceKind",
    "Vault",
    "choose_image",
    "choose_images",
    "find_backups",
    "group_machines",
]
