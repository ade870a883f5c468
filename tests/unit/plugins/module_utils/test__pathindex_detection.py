# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the scan detects: rewrites that keep size and mtime (compare=hash), indexes written
before change times were recorded, and what it reports of names it cannot replicate."""

from __future__ import annotations

import os
import sqlite3
import time

from ansible_collections.scidata.replication.plugins.module_utils import _pathindex

BASE_NS = 1700000000 * 10 ** 9


def write(root, rel, data, mtime_ns=BASE_NS):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def open_index(tmp_path, compare="hash"):
    index = _pathindex.PathIndex(str(tmp_path / "index.sqlite"), compare, "sha256").open()
    index.bind("job", str(tmp_path / "src"))
    return index


def deliver_all(index, dest=1):
    files = index.candidates(dest, 10 ** 6)
    index.record_submission("sub-%d" % len(files), dest, "transfer", files)
    for sub in index.open_submissions():
        index.settle(sub, "SUCCEEDED", [dest])


def past_racy_window():
    """Wait until the files written so far are old enough for their ctime to be kept."""
    time.sleep(_pathindex.RACY_CTIME_NS / 10 ** 9 + 0.02)


def pending(index):
    return sorted(c["path"] for c in index.candidates(1, 10 ** 6))


def make_src(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    return str(src)


def test_hash_finds_a_rewrite_that_keeps_size_and_mtime(tmp_path):
    src = make_src(tmp_path)
    write(src, "d/result.dat", b"version 1")
    write(src, "d/other.dat", b"untouched")
    past_racy_window()
    index = open_index(tmp_path)
    index.scan(src)
    deliver_all(index)
    assert pending(index) == []
    # Reprocessed output: same length, and the mtime set back to what it was (a clock tick later,
    # so the ctime moves even where the kernel keeps it at tick granularity).
    time.sleep(0.05)
    write(src, "d/result.dat", b"version 2")
    report = index.scan(src)
    assert report.modified.paths == ["d/result.dat"]
    assert pending(index) == ["d/result.dat"]
    # A change that keeps the size and the whole-second mtime goes with sync_level=checksum.
    entry = index.candidates(1, 10)[0]
    assert entry["sent"][:2] == (len(b"version 1"), BASE_NS)


def test_hash_rehashes_only_files_whose_ctime_moved(tmp_path, monkeypatch):
    src = make_src(tmp_path)
    for number in range(5):
        write(src, "f%d" % number, b"%d" % number)
    past_racy_window()
    index = open_index(tmp_path)
    index.scan(src)
    deliver_all(index)
    reads = []
    original = _pathindex.file_digest
    monkeypatch.setattr(_pathindex, "file_digest", lambda fd, name, alg: reads.append(name) or original(fd, name, alg))
    assert index.scan(src).index_changed is False and reads == []
    os.chmod(os.path.join(src, "f2"), 0o600)  # moves the ctime only: hashed again, found the same
    past_racy_window()
    report = index.scan(src)
    assert reads == ["f2"] and report.modified.count == 0 and pending(index) == []


def test_a_file_hashed_right_after_a_write_is_hashed_again_next_scan(tmp_path, monkeypatch):
    src = make_src(tmp_path)
    write(src, "fresh", b"1234")
    index = open_index(tmp_path)
    index.scan(src)  # within the racy window: a rewrite now could keep this very ctime
    deliver_all(index)
    reads = []
    original = _pathindex.file_digest
    monkeypatch.setattr(_pathindex, "file_digest", lambda fd, name, alg: reads.append(name) or original(fd, name, alg))
    past_racy_window()
    index.scan(src)
    assert reads == ["fresh"] and pending(index) == []
    del reads[:]
    assert index.scan(src).index_changed is False and reads == []


def test_an_index_without_change_times_is_upgraded_and_hashes_every_file_once(tmp_path):
    src = make_src(tmp_path)
    write(src, "a", b"aaaa")
    write(src, "b", b"bbbb")
    index = open_index(tmp_path)
    index.scan(src)
    deliver_all(index)
    index.close()
    # An index written before change times were recorded: no ctimes column.
    conn = sqlite3.connect(str(tmp_path / "index.sqlite"))
    conn.execute("ALTER TABLE dirs DROP COLUMN ctimes")
    conn.commit()
    conn.close()
    time.sleep(0.05)
    write(src, "b", b"BBBB")  # rewritten meanwhile, size and mtime kept
    past_racy_window()
    index = open_index(tmp_path)
    assert len(index.notes) == 1 and "hashed once more" in index.notes[0]
    report = index.scan(src)
    assert report.modified.paths == ["b"] and pending(index) == ["b"]
    deliver_all(index)
    index.close()
    again = open_index(tmp_path)
    assert again.notes == [] and again.scan(src).index_changed is False


def test_other_compare_modes_keep_no_change_times(tmp_path):
    src = make_src(tmp_path)
    write(src, "a", b"aaaa")
    index = open_index(tmp_path, "mtime_size")
    index.scan(src)
    assert index.conn.execute("SELECT count(*) FROM dirs WHERE ctimes IS NOT NULL").fetchone()[0] == 0


def test_files_inside_a_directory_whose_name_is_not_utf8_are_listed_as_skipped(tmp_path):
    src = make_src(tmp_path)
    bad = os.path.join(os.fsencode(src), b"run\xff")
    os.makedirs(os.path.join(bad, b"deep"))
    for rel in (b"a.dat", b"deep/b\xfe.dat"):
        with open(os.path.join(bad, rel), "wb") as handle:
            handle.write(b"data")
    os.symlink(b"a.dat", os.path.join(bad, b"link"))
    write(src, "good/c.dat", b"c")
    index = open_index(tmp_path, "mtime_size")
    report = index.scan(src)
    # Shown with the collection's one escaping: each byte that is not UTF-8 as \xNN.
    assert report.skipped.paths == ["run\\xff/", "run\\xff/a.dat", "run\\xff/deep/b\\xfe.dat"]
    assert report.skipped.count == 3 and report.new.paths == ["good/c.dat"]
    assert pending(index) == ["good/c.dat"]
