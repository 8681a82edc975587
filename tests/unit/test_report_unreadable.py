"""The restore report of a backup with unreadable files: INCOMPLETE, never OK, the files listed."""

from __future__ import annotations

from pathlib import Path

from rescue.engine.journal import Journal
from rescue.engine.report import summary_text, unreadable_files
from rescue.steps.copy import CopyTree


def steps() -> list[CopyTree]:
    return [CopyTree(vault="root", image="2026-1126-0300", source=Path("/b/root/2026-1126-0300/tree"), mountpoint="/"),
            CopyTree(vault="home", image="2026-1126-0300", source=Path("/b/home/2026-1126-0300/tree"),
                     mountpoint="/home")]


def journal(tmp_path: Path) -> Journal:
    j = Journal(path=tmp_path / "journal.json")
    j.data("copy:home")["unreadable"] = ["damaged/photo 1.jpg", "new\nline"]
    j.data("verify")["unreadable"] = {"/home": ["damaged/photo 1.jpg", "later/found.bin"]}
    return j


def test_incomplete_result_lists_files_per_filesystem(tmp_path):
    text = summary_text(title="t", target="/dev/vdb", steps=steps(), journal=journal(tmp_path), ok=True, seconds=3)
    assert "result:   INCOMPLETE: 3 file(s) could not be read from the backup" in text
    assert "result:   OK" not in text
    section = text[text.index("not restored, the backup could not be read"):]
    assert "  /home (vault home, image 2026-1126-0300):\n    damaged/photo 1.jpg\n    later/found.bin\n    new\\nline" in section
    assert "  / (vault" not in section


def test_failed_stays_failed_and_an_untouched_restore_is_ok(tmp_path):
    text = summary_text(title="t", target="/dev/vdb", steps=steps(), journal=journal(tmp_path), ok=False,
                        seconds=3, failure="step 9: boom")
    assert "result:   FAILED (step 9: boom)" in text and "damaged/photo 1.jpg" in text
    clean = summary_text(title="t", target="/dev/vdb", steps=steps(), journal=Journal(path=tmp_path / "j2"),
                         ok=True, seconds=3)
    assert "result:   OK" in clean and "not restored" not in clean


def test_a_damaged_journal_does_not_break_the_report(tmp_path):
    j = Journal(path=tmp_path / "journal.json")
    j.data("copy:home")["unreadable"] = "not a list"
    j.data("verify")["unreadable"] = ["not", "a", "dict"]
    assert unreadable_files(steps(), j) == []


def test_a_bootloader_step_that_installed_nothing_is_skipped_not_done(tmp_path):
    """The final report tells the final truth: no `done install grub` beside `bootloader NOT installed`."""
    from rescue.layout.model import BootMode
    from rescue.steps.bootloader import InstallBootloader

    boot = InstallBootloader(disk="/dev/vdb", mode=BootMode.BIOS)
    j = Journal(path=tmp_path / "journal.json")
    j.start("bootloader")
    j.data("bootloader").update(attempted=False, reason="the restored system has no grub-install")
    j.finish("bootloader", 0.1)
    text = summary_text(title="t", target="/dev/vdb", steps=[boot], journal=j, ok=True, seconds=1)
    [line] = [x for x in text.splitlines() if "install grub" in x]
    assert "skipped" in line and "done" not in line.split("install grub")[0], line
    assert "(not done: the restored system has no grub-install)" in line

    j.data("bootloader")["attempted"] = True  # installed: done, as before
    text = summary_text(title="t", target="/dev/vdb", steps=[boot], journal=j, ok=True, seconds=1)
    [line] = [x for x in text.splitlines() if "install grub" in x]
    assert line.split()[1] == "done" and "not done" not in line
