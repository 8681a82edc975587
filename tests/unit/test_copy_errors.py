"""rescue.engine.copyerrors: cp/rsync error lines become the paths a person reads.

The lines are the ones cp and rsync printed here for files on a btrfs whose
data blocks were damaged (tests/integration/test_read_errors.py makes them).
"""

from __future__ import annotations

import os

from rescue.engine.copyerrors import _shell_words, classify, counted, drop_partial_copies, mark_folders, unmarked

SRC = "/backup/dirvish/home/2026-1126-0300/tree"
DST = "/run/rescue/target-x/work/home"


def test_cp_and_rsync_read_errors_become_relative_paths_once():
    lines = [
        f"cp: error reading '{SRC}/./d/bad one.bin': Input/output error",
        f"cp: error reading '{SRC}/./bad2': Input/output error",
        f'rsync: [sender] read errors mapping "{SRC}/bad2": Input/output error (5)',
        f'rsync: [sender] read errors mapping "{SRC}/d/bad one.bin": Input/output error (5)',
        "ERROR: bad2 failed verification -- update discarded.",
        "ERROR: d/bad one.bin failed verification -- update discarded.",
        "IO error encountered -- skipping file deletion",
        "rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394)",
    ]
    e = classify(lines, SRC, DST)
    assert e.unreadable == ("d/bad one.bin", "bad2")
    assert e.target == () and e.other == ()


def test_target_write_errors_are_not_blamed_on_the_backup():
    lines = [f'rsync: [generator] recv_generator: mkdir "{DST}/corpus" failed: Input/output error (5)',
             f"cp: cannot create regular file '{DST}/./x': Input/output error"]
    e = classify(lines, SRC, DST)
    assert e.unreadable == () and len(e.target) == 2


def test_odd_names_are_decoded():
    assert _shell_words("error reading 'it'\\''s' x") == ["it's"]
    assert _shell_words("error reading 'a'$'\\n''b': I/O") == ["a\nb"]
    assert _shell_words("error reading 'caf'$'\\303\\251': I/O") == ["café"]
    lines = [f'rsync: [sender] read errors mapping "{SRC}/new\\#012line": Input/output error (5)',
             f"cp: error reading '{SRC}/./quote'\\''d': Input/output error"]
    assert classify(lines, SRC, DST).unreadable == ("new\nline", "quote'd")


def test_unknown_lines_are_kept_apart_and_nothing_leads_out():
    e = classify(["something odd happened", 'rsync: [sender] "/etc/shadow" failed'], SRC, DST)
    assert e.unreadable == () and len(e.other) == 2
    assert classify(["ERROR: ../../etc/x failed verification -- update discarded."], SRC, DST).unreadable == ("etc/x",)


def test_drop_partial_copies_removes_every_name_of_the_file_and_nothing_outside(tmp_path):
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    (dest / "bad").write_bytes(b"")
    os.link(dest / "bad", dest / "d" / "bad-link")
    (dest / "good").write_bytes(b"ok")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    (dest / "link").symlink_to(outside)
    removed = drop_partial_copies(dest, ["bad", "link/victim", "good/../../outside/victim", "missing"])
    assert sorted(removed) == ["bad", "d/bad-link"]
    assert (dest / "good").exists() and (outside / "victim").read_text() == "keep"


def test_drop_partial_copies_keeps_the_folder_times(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "bad").write_bytes(b"")
    os.utime(tmp_path / "d", ns=(1_000_000_000, 2_000_000_000))
    assert drop_partial_copies(tmp_path, ["d/bad"]) == ["d/bad"]
    assert os.lstat(tmp_path / "d").st_mtime_ns == 2_000_000_000


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PIECES = st.sampled_from(["cp: error reading ", "rsync: [sender] read errors mapping ", "ERROR: ",
                           " failed verification -- update discarded.", "'", "$'", "\\'", '"', "\\#012",
                           "\\", "/", "./", "../", SRC, DST, " ", "x", "é", "\n", ": Input/output error"])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(st.one_of(_PIECES, st.text(max_size=5))).map("".join), max_size=5))
def test_any_error_text_gives_safe_relative_paths(lines):
    e = classify(lines, SRC, DST)
    for rel in e.unreadable:
        assert rel and not rel.startswith("/") and ".." not in rel.split("/") and "." not in rel.split("/")


def test_folders_among_the_unreadable_names_are_marked(tmp_path):
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "file").write_text("x")
    (tmp_path / "to-dir").symlink_to("dir")
    names = ["dir/sub", "dir/file", "to-dir", "dir", "gone/file", "(not a file name) cp: odd", "done/"]
    assert mark_folders(tmp_path, names) == [
        "dir/sub/", "dir/file", "to-dir", "dir/", "gone/file", "(not a file name) cp: odd", "done/"]
    assert [unmarked(n) for n in mark_folders(tmp_path, names)][:4] == ["dir/sub", "dir/file", "to-dir", "dir"]


def test_counted_names_say_files_and_folders():
    assert counted(["a", "b"]) == "2 file(s)"
    assert counted(["a/"]) == "1 folder(s)"
    assert counted(["a", "b/", "c/"]) == "1 file(s) and 2 folder(s)"
