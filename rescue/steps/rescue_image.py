"""prepare-disk's rescue system: the image's used blocks written into the rescue partition."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rescue import events as ev
from rescue.steps.base import Context, Step, sh

MIB = 1 << 20


@dataclass(frozen=True)
class WriteRescueImage(Step):
    """Write only the blocks the image's filesystem uses, each range checked against its block map.

    With verify the written ranges are read back. A rerun after an
    interruption simply writes the image again: the same bytes to the same place.
    """

    kind = "image"
    device: str  # the rescue partition
    image: str  # rescue-root.img
    bmap: str | None  # its block map file; None: made from the image when the step runs
    image_size: int  # bytes
    verify: bool = True

    @property
    def key(self) -> str:
        return f"image:{self.device}"

    def describe(self) -> str:
        return (f"write the rescue image {Path(self.image).name} ({self.image_size / MIB:.0f} MiB, used blocks "
                f"only) to {self.device}" + (", read back" if self.verify else ""))

    def script(self) -> list[str]:
        if self.bmap:
            return [sh("bmaptool", "copy", "--bmap", self.bmap, self.image, self.device)]
        return [sh("dd", f"if={self.image}", f"of={self.device}", "bs=4M", "conv=fsync")]  # all of it: no map

    def run(self, ctx: Context) -> None:
        from rescue.image import bmap as bmapmod

        image = Path(self.image)
        bm = bmapmod.load(Path(self.bmap)) if self.bmap else bmapmod.create(image)

        def progress(done: int, total: int) -> None:
            ctx.emit(ev.Progress(ctx.key, done, total, 0, 0, None if done < total else 0.0))

        stats = bmapmod.copy_image(image, bm, self.device, verify=self.verify, progress=progress)
        ctx.say(f"rescue image {image.name} -> {self.device}: {stats.bytes_written / MIB:.0f} MiB written "
                f"of {bm.image_size / MIB:.0f} MiB in {stats.seconds:.1f} s"
                + (", read back and verified" if self.verify else ", checked against its block map"))
