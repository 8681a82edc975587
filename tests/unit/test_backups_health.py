"""`rescue list --health` and `--check`: what an image added, growth, nights left, thresholds.

Banks here are fabricated (hard links made with os.link, as rsync --link-dest
makes them); the real dirvish run is in tests/integration/test_health_real.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from rescue.backups import find_backups
from rescue.backups.health import (
    Added, BankHealth, Limits, MachineHealth, bank_health, machine_health, measure_added, nights_left,
    problems, read_added, record_added, reference_of, write_added,
)
from rescue.cli import main
from rescue.commands.list import CHECK_PROBLEMS
from rescue.errors import Exit

from test_backups_dirvish import summary  # noqa: E402  (tests/unit is on sys.path)


def blocks(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def night(bank: Path, vault: str, name: str, previous: str | None, files: dict[str, bytes],
          keep: tuple[str, ...] = (), status: str = "success", tree: str = "/home") -> Path:
    """An image as dirvish makes it: files in `keep` hard-linked to the previous image, the rest new."""
    d = bank / vault / name
    (d / "tree").mkdir(parents=True)
    for rel, data in files.items():
        p = d / "tree" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel in keep and previous:
            os.link(bank / vault / previous / "tree" / rel, p)
        else:
            p.write_bytes(data)
    (d / "summary").write_text(summary(image=name, reference=previous or "", status=status, tree=tree))
    return d


def test_added_counts_new_inodes_not_link_counts(tmp_path):
    bank = tmp_path / "bank"
    files = {"same": b"s" * 10000, "changed": b"c" * 20000, "sub/other": b"o" * 5000}
    night(bank, "home", "2026-1124-0300", None, files)
    night(bank, "home", "2026-1125-0300", "2026-1124-0300", files, keep=("same", "sub/other"))
    files3 = dict(files, added=b"a" * 30000)
    third = night(bank, "home", "2026-1126-0300", "2026-1125-0300", files3, keep=("same", "changed"))
    # sub/other is new on the third night but `same` has link count 3: neither nlink == 1 nor > 1 decides
    assert os.lstat(third / "tree" / "same").st_nlink == 3
    assert os.lstat(third / "tree" / "changed").st_nlink == 2  # linked by the previous image only

    added = measure_added(third, reference_of(third))
    t = third / "tree"
    new_files = blocks(t / "sub" / "other") + blocks(t / "added")
    folders = blocks(third) + blocks(t) + blocks(t / "sub")
    assert added.reference == "2026-1125-0300"
    assert added.bytes == new_files + folders + blocks(third / "summary")
    # image folder, tree/, sub/, summary, sub/other, added
    assert added.inodes == 6

    # an older image measured later (--measure): its new `changed` is now linked by the third night too
    second = bank / "home" / "2026-1125-0300"
    assert os.lstat(second / "tree" / "changed").st_nlink == 2
    older = measure_added(second, reference_of(second))
    assert older.reference == "2026-1124-0300"
    t = second / "tree"
    assert older.bytes == (blocks(t / "changed") + blocks(second) + blocks(t) + blocks(t / "sub")
                           + blocks(second / "summary"))
    assert older.inodes == 5  # image folder, tree/, sub/, summary, changed


def test_hard_links_inside_one_image_count_once(tmp_path):
    bank = tmp_path / "bank"
    first = night(bank, "home", "2026-1125-0300", None, {"a": b"x" * 8192})
    os.link(first / "tree" / "a", first / "tree" / "b")
    added = measure_added(first, None)
    # folder, tree/, summary, a (= b)
    assert added.inodes == 4 and added.reference is None


def test_reference_falls_back_to_the_older_sibling(tmp_path):
    bank = tmp_path / "bank"
    night(bank, "home", "2026-1124-0300", None, {"a": b"1"})
    second = night(bank, "home", "2026-1125-0300", None, {"a": b"1"})
    (second / "summary").write_text("client: vm\n")  # no Reference: line yet (dirvish still running)
    assert reference_of(second) == bank / "home" / "2026-1124-0300"


def test_added_file_round_trip_and_garbage(tmp_path):
    bank = tmp_path / "bank"
    image = night(bank, "home", "2026-1125-0300", None, {"a": b"1"})
    record_added(image)
    [vault] = find_backups([bank]).vaults
    got = read_added(vault.images[0])
    assert got is not None and got.inodes == 4
    (image / "rescue" / "added.json").write_text('{"version": 1, "bytes": -3, "inodes": 1}')
    assert read_added(vault.images[0]) is None
    (image / "rescue" / "added.json").write_text("not json")
    assert read_added(vault.images[0]) is None


def test_nights_left_is_the_nearer_of_bytes_and_inodes():
    assert nights_left(1000, 10, 100, 1) == 10.0
    assert nights_left(1000, 5, 100, 1) == 5.0
    assert nights_left(1000, 5, 0, 0) is None
    assert nights_left(1000, 5, 100, None) == 10.0


def test_growth_is_the_mean_of_the_nights_after_the_first(tmp_path):
    bank = tmp_path / "bank"
    names = ["2026-1123-0300", "2026-1124-0300", "2026-1125-0300", "2026-1126-0300"]
    prev = None
    for n in names:
        for vault in ("root", "home"):
            night(bank, vault, n, prev, {"a": b"1"})
        prev = n
    figures = {names[0]: (10**9, 1000), names[1]: (100, 10), names[2]: (300, 30), names[3]: (200, 20)}
    for n, (b, i) in figures.items():
        for vault in ("root", "home"):
            write_added(bank / vault / n, Added(bytes=b, inodes=i, reference=None))
    h = bank_health(bank, find_backups([bank]).vaults)
    assert [x.bytes for x in h.nights] == [2 * 10**9, 200, 600, 400]
    assert h.growth_bytes == 400 and h.growth_inodes == 40  # the full first night is not growth
    assert h.nights_left == pytest.approx(min(h.free / 400, h.inodes_free / 40))
    assert h.unmeasured == 0


def test_machine_health_age_failures_and_unheld_mount_points(tmp_path):
    bank = tmp_path / "bank"
    night(bank, "root", "2026-1124-0300", None, {"a": b"1"}, tree="/")
    night(bank, "root", "2026-1125-0300", "2026-1124-0300", {"a": b"1"}, status="error (23) -- partial", tree="/")
    good = bank / "root" / "2026-1124-0300"
    (good / "rescue").mkdir()
    (good / "rescue" / "layout.json").write_text(json.dumps({"root": "/", "filesystems": [
        {"mountpoint": "/"}, {"mountpoint": "/home"}, {"mountpoint": None, "fstype": "swap"}]}))
    [m] = find_backups([bank]).machines
    h = machine_health(m, now=dt.datetime(2026, 12, 6, 3, 0))
    assert h.newest == "root/2026-1124-0300"
    assert h.age_days == pytest.approx(12.0)
    assert (h.failed, h.incomplete, h.layout) == (1, 0, True)
    assert h.unheld == ("/home",)


def bank_figures(**kw) -> BankHealth:
    base = dict(bank=Path("/b"), size=1000, used=950, free=50, inodes=100, inodes_used=10, inodes_free=90,
                nights=(), unmeasured=0, growth_bytes=10, growth_inodes=1, nights_left=5.0)
    return BankHealth(**(base | kw))


def test_problems_name_the_bank_or_machine_and_the_threshold():
    m = MachineHealth(client="web", newest="root/x", newest_at="", age_days=3.5, failed=0, incomplete=0,
                      layout=True, unheld=())
    out = problems([bank_figures()], [m], Limits(max_age_days=2, min_nights=14, max_used_percent=90))
    assert out == [
        "bank /b: 95.0% of its bytes used, over --max-used 90%",
        "bank /b: full in 5.0 nights at the last nights' growth, under --min-nights 14",
        "machine web: newest usable image root/x is 3.5 days old, over --max-age 2d",
    ]
    assert problems([bank_figures(used=10)], [m], Limits(max_age_days=4, min_nights=5, max_used_percent=90)) == []


def test_check_exit_codes(tmp_path, capsys):
    bank = tmp_path / "bank"
    night(bank, "root", "2026-1125-0300", None, {"a": b"1"})
    assert main(["list", "--bank", str(bank), "--check", "--max-age", "2d"]) == CHECK_PROBLEMS
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("machine vm: newest usable image root/2026-1125-0300")
    assert out[0].endswith("over --max-age 2d")
    assert main(["list", "--bank", str(bank), "--check", "--max-age", "100000d", "--max-used", "100%"]) == Exit.OK
    assert capsys.readouterr().out.startswith("ok: 1 bank(s), 1 machine(s)")
    with pytest.raises(SystemExit) as e:
        main(["list", "--bank", str(bank), "--check", "--max-used", "ninety"])
    assert e.value.code == Exit.USAGE
    assert CHECK_PROBLEMS not in (Exit.OK, Exit.ERROR, Exit.USAGE)


def test_health_text_json_and_measure_on_request(tmp_path, capsys):
    bank = tmp_path / "bank"
    night(bank, "root", "2026-1125-0300", None, {"a": b"1"})
    night(bank, "root", "2026-1126-0300", "2026-1125-0300", {"a": b"1", "b": b"2" * 9000}, keep=("a",))
    assert main(["list", "--bank", str(bank), "--health"]) == Exit.OK
    out = capsys.readouterr().out
    assert "2 recent image(s) not measured" in out and "growth per night: unknown" in out
    assert not list(bank.glob("*/*/rescue/added.json")), "--health alone must not write into the bank"

    assert main(["list", "--bank", str(bank), "--health", "--measure", "--json"]) == Exit.OK
    data = json.loads(capsys.readouterr().out)
    [b] = data["banks"]
    second = bank / "root" / "2026-1126-0300"
    expect = blocks(second) + blocks(second / "tree") + blocks(second / "summary") + blocks(second / "tree" / "b")
    assert [n["bytes"] for n in b["nights"]][1] == expect
    assert b["growth_bytes"] == expect and b["growth_inodes"] == 4
    assert 0 < b["used_percent"] <= 100 and b["unmeasured"] == 0
    [m] = data["machines"]
    assert m["newest"] == "root/2026-1126-0300" and m["layout"] is False
    assert len(list(bank.glob("*/*/rescue/added.json"))) == 2


def test_a_failed_measure_is_a_note_never_a_failed_capture(tmp_path, capsys):
    from rescue.commands.capture import _measure

    _measure(tmp_path / "vanished" / "2026-1126-0300")  # the image folder is gone: nothing to walk
    err = capsys.readouterr().err
    assert err.startswith("rescue capture: note: what this image added was not measured")


def test_links_in_the_bank_are_neither_read_nor_written_through(tmp_path):
    bank = tmp_path / "bank"
    image = night(bank, "home", "2026-1125-0300", None, {"a": b"1"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "added.json").write_text('{"version": 1, "bytes": 7, "inodes": 7, "reference": null}')
    (image / "rescue").symlink_to(outside)
    with pytest.raises(OSError, match="not a plain folder"):
        write_added(image, Added(bytes=1, inodes=1, reference=None))
    assert sorted(p.name for p in outside.iterdir()) == ["added.json"]
    (image / "rescue").unlink()
    (image / "rescue").mkdir()
    (image / "rescue" / "added.json").symlink_to(outside / "added.json")
    [vault] = find_backups([bank]).vaults
    assert read_added(vault.images[0]) is None


def test_expiry_that_keeps_up_with_growth_means_no_limit_and_a_steady_size(tmp_path):
    """dirvish wrote each image's Expire:; once the oldest image is that old, each night frees
    about what a night adds: a bank with room until then never fills (at this growth)."""
    bank = tmp_path / "bank"
    names = ["2026-1123-0300", "2026-1124-0300", "2026-1125-0300"]
    prev = None
    for n in names:
        d = night(bank, "home", n, prev, {"a": b"1"})
        prev = n
        when = dt.datetime.strptime(n, "%Y-%m%d-%H%M")
        text = (d / "summary").read_text()
        (d / "summary").write_text(text + f"Image-now: {when:%Y-%m-%d %H:%M:%S}\nExpire: Never\n")
        write_added(d, Added(bytes=10**9 if n == names[0] else 1000, inodes=10, reference=None))

    def with_expiry(days: int | None) -> BankHealth:
        for n in names:
            s = bank / "home" / n / "summary"
            text = s.read_text()
            base = dt.datetime.strptime(n, "%Y-%m%d-%H%M")
            line = "Expire: Never" if days is None else \
                f"Expire: +{days} days == {base + dt.timedelta(days=days):%Y-%m-%d %H:%M:%S}"
            s.write_text("\n".join(line if x.startswith("Expire:") else x for x in text.splitlines()) + "\n")
        return bank_health(bank, find_backups([bank]).vaults)

    never = with_expiry(None)
    assert never.retention_days is None and never.steady_used is None
    assert never.nights_left == pytest.approx(min(never.free / 1000, never.inodes_free / 10))

    h = with_expiry(15)  # 2 days held, 13 more nights of 1000 bytes before the first image expires
    assert h.retention_days == pytest.approx(15.0)
    assert h.nights_left is None and h.steady_used == h.used + 13 * 1000

    assert main(["list", "--bank", str(bank), "--health"]) == Exit.OK

    # a bank that fills before its first image expires: nights left stays the plain estimate
    fast = h.free // 50
    for n in names[1:]:
        write_added(bank / "home" / n, Added(bytes=fast, inodes=10, reference=None))
    year = with_expiry(365)
    assert year.nights_left == pytest.approx(min(year.free / fast, year.inodes_free / 10), rel=0.01)
    assert year.nights_left < 363 and year.steady_used is None
