"""Finding backups: dirvish banks, rsnapshot roots and plain folders."""

from rescue.backups.model import Image, ImageStatus, Machine, SourceKind, Vault

__all__ = ["Image", "ImageStatus", "Machine", "SourceKind", "Vault"]
