# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The path index alone: scan + diff, settle, set_time, check-mode copies, on real directories."""

from __future__ import annotations

import fcntl
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc

import pytest

from ansible_collections.scidata.replication.plugins.module_utils import _pathindex
from ansible_collections.scidata.replication.plugins.module_utils._errors import (
    ConfigError,
    ReplicationError,
    StateError,
)

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    HAS_HYPOTHESIS = True
except ImportError:  # the seeded loop below checks the same property
    HAS_HYPOTHESIS = False

BASE = 1700000000


def write(root, rel, data=b"x", mtime=None):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))


def open_index(tmp_path, compare="mtime_size", algorithm="sha256", name="index.sqlite"):
    index = _pathindex.PathIndex(str(tmp_path / name), compare, algorithm).open()
    index.bind("job", str(tmp_path / "src"))
    return index


def pending_paths(index, dest=1):
    return sorted(c["path"] for c in index.candidates(dest, 10 ** 6))


def deliver_all(index, dest_ids=(1,)):
    """What a SUCCEEDED task to every destination does to the index."""
    for dest in dest_ids:
        files = index.candidates(dest, 10 ** 6)
        if files:
            index.record_submission("sub-%s-%s" % (dest, time.time_ns()), dest, "transfer", files)
    for sub in index.open_submissions():
        index.settle(sub, "SUCCEEDED", list(dest_ids))


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "src"
    path.mkdir()
    return str(path)


def test_scan_reports_new_modified_deleted_and_deep_changes(tmp_path, src):
    for rel in ("a.dat", "d1/b.dat", "d1/d2/d3/deep.dat", "gone/x.dat"):
        write(src, rel, b"0123456789", BASE * 10 ** 9)
    index = open_index(tmp_path)
    first = index.scan(src)
    assert first.new.count == 4 and first.index_changed
    assert index.scan(src).index_changed is False
    top = os.stat(src).st_mtime_ns
    with open(os.path.join(src, "d1/d2/d3/deep.dat"), "r+b") as handle:  # in place: no directory mtime moves
        handle.write(b"ABC")
    os.utime(os.path.join(src, "d1/d2/d3/deep.dat"), ns=(BASE * 10 ** 9 + 1, BASE * 10 ** 9 + 1))
    assert os.stat(src).st_mtime_ns == top
    shutil.rmtree(os.path.join(src, "gone"))
    second = index.scan(src)
    assert second.modified.paths == ["d1/d2/d3/deep.dat"]
    assert second.deleted.paths == ["gone/x.dat"] and second.unchanged == 2
    assert index.total_files() == 3
    assert index.lookup("gone") is None


def test_compare_modes(tmp_path, src):
    write(src, "f", b"same size!", BASE * 10 ** 9)
    for compare, expect in (("mtime", 0), ("mtime_size", 1), ("hash", 1)):
        index = open_index(tmp_path, compare, name=compare + ".sqlite")
        index.scan(src)
        deliver_all(index)
        # Same mtime, another size: only mtime_size and hash see it.
        with open(os.path.join(src, "f"), "ab") as handle:
            handle.write(b"+")
        os.utime(os.path.join(src, "f"), ns=(BASE * 10 ** 9, BASE * 10 ** 9))
        assert index.scan(src).modified.count == expect, compare
        with open(os.path.join(src, "f"), "wb") as handle:
            handle.write(b"same size!")
        os.utime(os.path.join(src, "f"), ns=(BASE * 10 ** 9, BASE * 10 ** 9))
        index.scan(src)
        assert pending_paths(index) == [], compare
        index.close()


def test_hash_mode_reads_only_files_whose_size_or_mtime_changed(tmp_path, src, monkeypatch):
    for number in range(20):
        write(src, "d/f%02d" % number, b"%d" % number, BASE * 10 ** 9)
    index = open_index(tmp_path, "hash", "md5")
    time.sleep(_pathindex.RACY_CTIME_NS / 10 ** 9)  # files hashed right after a write are hashed again
    reads = []
    original = _pathindex.file_digest
    monkeypatch.setattr(_pathindex, "file_digest", lambda fd, name, alg: reads.append(name) or original(fd, name, alg))
    index.scan(src)
    assert len(reads) == 20
    deliver_all(index)
    del reads[:]
    index.scan(src)
    assert reads == []
    os.utime(os.path.join(src, "d/f03"), ns=(BASE * 10 ** 9 + 7, BASE * 10 ** 9 + 7))  # touched, same contents
    write(src, "d/f04", b"new contents", BASE * 10 ** 9 + 7)
    report = index.scan(src)
    assert sorted(reads) == ["f03", "f04"] and report.modified.paths == ["d/f04"]
    assert pending_paths(index) == ["d/f04"]


def test_hostile_names_symlinks_special_and_invalid_utf8(tmp_path, src):
    names = ["with space", "new\nline", "-dash", "$(touch x)", "ünï", "quo'\"te", "tab\there"]
    for name in names:
        write(src, "h/" + name, name.encode("utf-8"))
    os.symlink("h", os.path.join(src, "link"))
    os.symlink("/etc/passwd", os.path.join(src, "h", "file-link"))
    os.mkfifo(os.path.join(src, "fifo"))
    with open(os.path.join(os.fsencode(src), b"bad\xff\xfe"), "wb") as handle:
        handle.write(b"?")
    index = open_index(tmp_path)
    report = index.scan(src)
    assert sorted(report.new.paths) == sorted("h/" + n for n in names)
    assert sorted(report.symlinks.paths) == ["h/file-link", "link"]
    assert report.special.paths == ["fifo"] and report.skipped.paths == ["bad\\xff\\xfe"]
    assert pending_paths(index) == sorted("h/" + n for n in names)
    assert index.lookup("h/new\nline") is not None


def test_unreadable_directory_is_reported_and_keeps_its_entries(tmp_path, src, monkeypatch):
    write(src, "open/a", b"1")
    write(src, "locked/b", b"2")
    index = open_index(tmp_path)
    index.scan(src)
    real_scandir = os.scandir
    locked_fd = []

    def scandir(target):
        if isinstance(target, int) and target in locked_fd:
            locked_fd.remove(target)  # the number is reused once the scan closes it
            raise PermissionError(13, "Permission denied")
        return real_scandir(target)

    real_open = os.open

    def opener(path, flags, mode=0o777, *, dir_fd=None):
        descriptor = real_open(path, flags, mode, dir_fd=dir_fd)
        if path == "locked":
            locked_fd.append(descriptor)
        return descriptor

    monkeypatch.setattr(_pathindex.os, "scandir", scandir)
    monkeypatch.setattr(_pathindex.os, "open", opener)
    report = index.scan(src)
    assert report.unreadable.paths == ["locked/ (Permission denied)"]
    assert report.deleted.count == 0 and index.total_files() == 2


def test_filters_exclude_prunes_and_include_selects(tmp_path, src):
    for rel in ("keep/a.h5", "keep/b.tmp", "scratch/c.h5", "top.h5", "notes.txt"):
        write(src, rel)
    index = open_index(tmp_path)
    index.scan(src)
    report = index.scan(src, include=["*.h5"], exclude=["*.tmp", "scratch"])
    assert sorted(report.excluded.paths) == ["keep/b.tmp", "notes.txt", "scratch/"]
    assert report.deleted.count == 0
    assert pending_paths(index) == ["keep/a.h5", "top.h5"]


def test_settle_marks_exactly_the_submitted_versions(tmp_path, src):
    write(src, "f", b"v1", BASE * 10 ** 9)
    index = open_index(tmp_path)
    index.scan(src)
    files = index.candidates(1, 10)
    index.record_submission("s1", 1, "transfer", files)
    assert index.candidates(1, 10) == []  # in flight: not offered again
    write(src, "f", b"v2-longer", BASE * 10 ** 9 + 5)  # changes while the task runs
    index.scan(src)
    index.settle(index.open_submissions()[0], "SUCCEEDED", [1])
    entry = index.candidates(1, 10)[0]
    assert entry["st"] == _pathindex.CHANGED and entry["sent"][:2] == (2, BASE * 10 ** 9)
    index.record_submission("s2", 1, "transfer", [entry])
    index.settle(index.open_submissions()[0], "FAILED", [1])
    retry = index.candidates(1, 10)[0]
    assert retry["st"] & _pathindex.RETRY  # sent again with sync_level=checksum
    index.record_submission("s3", 1, "transfer", [retry])
    index.settle(index.open_submissions()[0], "SUCCEEDED", [1])
    assert index.candidates(1, 10) == [] and index.counts()["pending"] == 0


def test_several_destinations_need_every_confirmation(tmp_path, src):
    write(src, "f", b"data")
    index = open_index(tmp_path)
    ids, added = index.set_destinations([{"collection": "A", "path": "/a"}, {"collection": "B", "path": "/b"}])
    assert added == []
    index.scan(src)
    index.record_submission("to-a", ids[0], "transfer", index.candidates(ids[0], 10))
    index.record_submission("to-b", ids[1], "transfer", index.candidates(ids[1], 10))
    subs = index.open_submissions()
    index.settle(subs[0], "SUCCEEDED", ids)
    index.settle(subs[1], "FAILED", ids)
    assert index.candidates(ids[0], 10) == [] and len(index.candidates(ids[1], 10)) == 1
    index.record_submission("to-b-2", ids[1], "transfer", index.candidates(ids[1], 10))
    index.settle(index.open_submissions()[0], "SUCCEEDED", ids)
    assert index.counts()["pending"] == 0
    ids, added = index.set_destinations([{"collection": "A", "path": "/a"}, {"collection": "C", "path": "/c"}])
    assert added == [ids[1]] and index.counts()["pending"] == 1
    assert index.candidates(ids[0], 10) == [] and len(index.candidates(ids[1], 10)) == 1


def test_mark_whole_tree_subpath_and_file(tmp_path, src):
    write(src, "old/a", b"1", (BASE - 100) * 10 ** 9)
    write(src, "old/b", b"2", (BASE + 100) * 10 ** 9)
    write(src, "new/c", b"3", (BASE + 200) * 10 ** 9)
    os.makedirs(os.path.join(src, "empty"))
    os.utime(os.path.join(src, "empty"), (BASE - 50, BASE - 50))
    index = open_index(tmp_path)
    index.scan(src)
    assert index.mark(BASE * 10 ** 9, None, root=src) == (1, 2, True)
    assert pending_paths(index) == ["new/c", "old/b"] and index.counts()["empty_dirs_pending"] == 0
    assert index.mark(BASE * 10 ** 9, None, root=src)[2] is False  # the same marking again changes nothing
    assert index.mark((BASE + 150) * 10 ** 9, "old", root=src) == (2, 0, True)
    assert pending_paths(index) == ["new/c"]
    assert index.mark((BASE - 1000) * 10 ** 9, "old/a", root=src) == (0, 1, True)
    assert pending_paths(index) == ["new/c", "old/a"]
    assert index.meta("marked_as_of") == float(BASE - 1000)
    with pytest.raises(ConfigError):
        index.mark(BASE * 10 ** 9, "missing", root=src)


def test_empty_directories_and_gone_paths(tmp_path, src):
    write(src, "d/f", b"1")
    os.makedirs(os.path.join(src, "e1", "e2"))
    index = open_index(tmp_path)
    index.scan(src, gone_dests=[1])
    assert [rel for _id, rel in index.unsent_empty_dirs()] == ["e1/e2"]
    deliver_all(index)
    shutil.rmtree(os.path.join(src, "d"))
    report = index.scan(src, gone_dests=[1])
    assert report.deleted.paths == ["d/f"] and index.gone_paths(1, 10) == ["d/"]
    write(src, "d/f", b"back")
    index.scan(src, gone_dests=[1])
    assert index.gone_paths(1, 10) == ["d/"]  # the directory delete stays: its file is sent again after it


@pytest.mark.parametrize("value, expected", [
    (1700000000, 1700000000 * 10 ** 9),
    ("1700000000.5", 1700000000500000000),
    (1700000000.25, 1700000000250000000),
    ("2023-11-14T22:13:20+00:00", 1700000000 * 10 ** 9),
    ("2023-11-14T22:13:20Z", 1700000000 * 10 ** 9),
])
def test_parse_as_of(value, expected):
    assert _pathindex.parse_as_of(value) == expected


@pytest.mark.parametrize("value", ["yesterday", None, True, "Infinity", "NaN", pytest.param(time.time() + 3600, id="in-an-hour")])
def test_parse_as_of_refuses(value):
    with pytest.raises(ConfigError):
        _pathindex.parse_as_of(value)


def test_index_path_and_default_dir():
    assert _pathindex.index_path("/x", "job-1").endswith("/x/dir_trie_sync-job-1.sqlite")
    odd = _pathindex.index_path("/x", "a/b c")
    assert "/" not in os.path.basename(odd) and odd != _pathindex.index_path("/x", "a_b_c")
    assert _pathindex.default_index_dir("/var/lib/r/state.db") == "/var/lib/r"
    assert _pathindex.default_index_dir("sqlite:////var/lib/r/state.db") == "/var/lib/r"
    assert _pathindex.default_index_dir("postgresql://u@h/db").endswith("scidata-replication")


def test_index_of_another_src_dir_is_refused(tmp_path, src):
    index = open_index(tmp_path)
    with pytest.raises(ConfigError, match="belongs to src_dir"):
        index.bind("job", "/elsewhere")


def test_check_mode_copy_never_touches_the_index(tmp_path, src):
    write(src, "f", b"1")
    path = str(tmp_path / "idx" / "job.sqlite")
    with _pathindex.opened_index(path, "mtime_size", "sha256", check_mode=True) as index:
        index.bind("job", src)
        assert index.scan(src).new.count == 1
    assert not os.path.exists(os.path.dirname(path))
    with _pathindex.opened_index(path, "mtime_size", "sha256", check_mode=False) as index:
        index.bind("job", src)
        index.scan(src)
    before = open(path, "rb").read()
    stamp = os.stat(path).st_mtime_ns
    write(src, "g", b"2")
    with _pathindex.opened_index(path, "mtime_size", "sha256", check_mode=True) as index:
        assert index.scan(src).new.paths == ["g"]
    assert open(path, "rb").read() == before and os.stat(path).st_mtime_ns == stamp
    assert sorted(os.listdir(os.path.dirname(path))) == ["job.sqlite"]


def test_memory_stays_flat_as_the_tree_grows(tmp_path):
    peaks = []
    for count in (1000, 8000):
        root = str(tmp_path / ("tree%d" % count))
        for number in range(count):
            write(root, "d%03d/f%05d" % (number // 100, number))
        index = _pathindex.PathIndex(str(tmp_path / ("i%d.sqlite" % count))).open()
        index.scan(root)
        tracemalloc.start()
        index.scan(root)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        index.close()
    assert peaks[1] < peaks[0] * 2 + 65536, peaks


def parallel_tree(root, dirs=12, files=5):
    for number in range(dirs * files):
        write(root, "run%02d/scan%d/f%03d" % (number % dirs, number % 2, number), b"x", BASE * 10 ** 9 + number)


def test_scan_workers_read_the_subtrees_and_find_what_one_process_finds(tmp_path, src, monkeypatch):
    parallel_tree(src, dirs=24)  # 24 subtrees for two workers: sent three to a message
    serial, parallel = open_index(tmp_path, name="serial.sqlite"), open_index(tmp_path, name="parallel.sqlite")
    for index in (serial, parallel):
        index.scan(src)
        deliver_all(index)
    write(src, "run03/scan1/f051", b"longer", BASE * 10 ** 9 + 99)
    write(src, "run07/new/g", b"y")
    os.unlink(os.path.join(src, "run05/scan1/f005"))
    shutil.rmtree(os.path.join(src, "run09/scan1"))
    readers = str(tmp_path / "readers")
    original = _pathindex.TreeReader.read_subtree

    def read_subtree(self, *args):
        with open(readers, "a") as handle:
            handle.write("%d\n" % os.getpid())
        return original(self, *args)

    monkeypatch.setattr(_pathindex.TreeReader, "read_subtree", read_subtree)
    monkeypatch.setattr(_pathindex, "ENTRIES_PER_MESSAGE", 3)  # diffs sent in many parts
    one = serial.scan(src, sample_size=1000).as_dict()
    many = parallel.scan(src, sample_size=1000, workers=2, min_dirs=0, subtrees_per_worker=1).as_dict()
    pids = set(int(line) for line in open(readers))
    assert os.getpid() not in pids and len(pids) == 2  # both workers read, this process did not
    assert many[0] == one[0], (many[0], one[0])
    assert (one[0]["modified"], one[0]["new"], one[0]["deleted"]) == (1, 1, 6), one
    assert dict((k, sorted(v)) for k, v in many[1].items()) == dict((k, sorted(v)) for k, v in one[1].items())
    assert pending_paths(parallel) == pending_paths(serial)
    assert parallel.total_files() == serial.total_files() == 24 * 5 - 1 - 5 + 1


def test_a_dead_scan_worker_fails_the_scan_and_writes_nothing(tmp_path, src, monkeypatch):
    parallel_tree(src)
    index = open_index(tmp_path)
    index.scan(src)
    deliver_all(index)
    write(src, "run02/scan0/f002", b"changed", BASE * 10 ** 9 + 500)

    def die(self, *args):
        os.kill(os.getpid(), signal.SIGKILL)

    with monkeypatch.context() as patch:
        patch.setattr(_pathindex.TreeReader, "read_subtree", die)
        with pytest.raises(ReplicationError, match="scan worker died"):
            index.scan(src, workers=2, min_dirs=0, subtrees_per_worker=1)
    assert pending_paths(index) == []
    report = index.scan(src, workers=2, min_dirs=0, subtrees_per_worker=1)
    assert report.modified.paths == ["run02/scan0/f002"] and pending_paths(index) == ["run02/scan0/f002"]


def test_scan_workers_hold_only_the_directories_on_the_way_down_open(tmp_path, src):
    # 300 subdirectories under one: a worker that opened them all at once would run out of
    # descriptors under this limit and miss the change at the bottom.
    for number in range(300):
        write(src, "wide/s%03d/f" % number, b"x", BASE * 10 ** 9)
    write(src, "other/f", b"x", BASE * 10 ** 9)
    index = open_index(tmp_path)
    index.scan(src)
    deliver_all(index)
    write(src, "wide/s250/f", b"changed", BASE * 10 ** 9 + 7)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 40, hard))
    try:
        report = index.scan(src, workers=2, min_dirs=0, subtrees_per_worker=1)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert report.workers == 2 and report.unreadable.count == 0, report.unreadable.paths
    assert report.modified.paths == ["wide/s250/f"] and report.directories == 303


def test_scan_workers_read_the_tree_the_scan_opened(tmp_path, monkeypatch):
    # src_dir is a symlink flipped to another tree while the scan starts its workers: they
    # must go on reading the tree the scan opened, not whatever the path names now.
    for tree in ("A", "B"):
        for number in range(6):
            write(str(tmp_path / tree), "t%d/%s%d" % (number, tree, number), tree.encode())
    link = str(tmp_path / "current")
    os.symlink("A", link)
    index = _pathindex.PathIndex(str(tmp_path / "index.sqlite")).open()
    index.scan(link)
    start_workers = _pathindex.PathIndex._start_workers

    def flip_then_start(self, *args):
        os.unlink(link)
        os.symlink("B", link)
        return start_workers(self, *args)

    monkeypatch.setattr(_pathindex.PathIndex, "_start_workers", flip_then_start)
    report = index.scan(link, workers=2, min_dirs=0, subtrees_per_worker=1)
    assert report.workers == 2 and (report.new.count, report.deleted.count, report.unchanged) == (0, 0, 6)


def test_a_diff_for_a_row_that_changed_meanwhile_is_refused(tmp_path, src, monkeypatch):
    # Positions in a worker's diff refer to the row it read; if another writer changed that row,
    # the scan stops and writes nothing rather than apply them to the wrong files.
    parallel_tree(src)
    index = open_index(tmp_path)
    index.scan(src)
    write(src, "run04/scan0/f004", b"changed", BASE * 10 ** 9 + 9)
    run = _pathindex.ScanWorkers.run

    def run_with_other_rows(self, tasks):
        for diffs, report in run(self, tasks):
            for diff in diffs:
                diff.row_check = (diff.row_check[0] + 1, diff.row_check[1])
            yield diffs, report

    monkeypatch.setattr(_pathindex.ScanWorkers, "run", run_with_other_rows)
    with pytest.raises(StateError, match="changed under this scan"):
        index.scan(src, workers=2, min_dirs=0, subtrees_per_worker=1)
    monkeypatch.undo()
    assert index.scan(src).modified.paths == ["run04/scan0/f004"]


KILLED_SCANNER = r"""
import fcntl, os, sys, time
from ansible_collections.scidata.replication.plugins.module_utils import _pathindex
src, index_path, lock_path = sys.argv[1:4]
lock = open(lock_path, "w")
fcntl.flock(lock, fcntl.LOCK_EX)
original = _pathindex.TreeReader.read

def slow_read(self, *args):
    time.sleep(0.1)  # a subtree takes a worker about 10 s
    return original(self, *args)

_pathindex.TreeReader.read = slow_read
index = _pathindex.PathIndex(index_path).open()
print("scanning", flush=True)
index.scan(src, workers=2, min_dirs=0, subtrees_per_worker=1)
"""


def test_scan_workers_die_with_the_scanning_process(tmp_path, src, python_env):
    # The module holds its run lock and stdout; workers must not keep them after it is killed.
    for number in range(200):
        write(src, "d%d/s%03d/f" % (number % 2, number), b"x")
    index_file = str(tmp_path / "index.sqlite")
    index = _pathindex.PathIndex(index_file).open()
    index.scan(src)
    index.close()
    script, lock_path = str(tmp_path / "scanner.py"), str(tmp_path / "job.lock")
    with open(script, "w") as handle:
        handle.write(KILLED_SCANNER)
    scanner = subprocess.Popen([sys.executable, script, src, index_file, lock_path], env=python_env,
                               stdout=subprocess.PIPE, text=True)
    assert scanner.stdout.readline() == "scanning\n"
    children = "/proc/%d/task/%d/children" % (scanner.pid, scanner.pid)
    deadline = time.monotonic() + 30
    workers = []
    while len(workers) < 2:
        assert time.monotonic() < deadline and scanner.poll() is None
        time.sleep(0.05)
        workers = open(children).read().split()
    time.sleep(0.3)  # the workers are reading
    scanner.kill()
    scanner.wait()
    deadline = time.monotonic() + 2
    while any(os.path.exists("/proc/%s" % pid) and open("/proc/%s/stat" % pid).read().split()[2] != "Z"
              for pid in workers):
        assert time.monotonic() < deadline, "scan workers outlived the scanning process"
        time.sleep(0.05)
    assert scanner.stdout.read() == ""  # end of file: nobody holds the output open any more
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


# -- property: the scan's changes equal a brute-force comparison ---------------------------------
NAMES = ["a", "b", "c d", "ü", "-x", "n\nl"]
DIRS = ["", "p", "p/q", "r", "r/s/t"]


def snapshot(root):
    """{relative path: (size, mtime_ns)} for every regular file, by brute force."""
    found = {}
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            found[os.path.relpath(path, root)] = (info.st_size, info.st_mtime_ns)
    return found


def apply_edit(root, edit, clock):
    kind, directory, name, size = edit
    rel = os.path.join(directory, name) if directory else name
    path = os.path.join(root, rel)
    clock[0] += 1000
    if kind == "write":
        if os.path.isdir(path):
            return
        try:
            write(root, rel, b"z" * size, clock[0])
        except (NotADirectoryError, FileExistsError):
            return
    elif kind == "touch" and os.path.isfile(path):
        os.utime(path, ns=(clock[0], clock[0]))
    elif kind == "delete" and os.path.isfile(path):
        os.unlink(path)
    elif kind == "rmdir" and directory and os.path.isdir(os.path.join(root, directory)):
        shutil.rmtree(os.path.join(root, directory))
    elif kind == "deliver":
        return "deliver"
    return None


def check_property(rounds, compare, workers=1):
    """Random edit rounds; after each scan, new/modified/deleted and the pending set must equal
    a brute-force comparison of snapshots (pending: differs from the last delivered version).
    With ``workers``, every subtree below the top directory is read by scan worker processes."""
    workdir = tempfile.mkdtemp(prefix="pathindex-property-")
    try:
        root = os.path.join(workdir, "src")
        os.makedirs(root)
        index = _pathindex.PathIndex(os.path.join(workdir, "i.sqlite"), compare, "md5").open()
        clock = [BASE * 10 ** 9]
        previous, delivered = {}, {}
        for edits in rounds:
            deliver = False
            for edit in edits:
                deliver = apply_edit(root, edit, clock) == "deliver" or deliver
            report = index.scan(root, sample_size=10 ** 6, workers=workers, min_dirs=0, subtrees_per_worker=1)
            current = snapshot(root)

            def differs(old, new):
                if compare == "mtime":
                    return old[1] != new[1]
                return old != new

            assert sorted(report.new.paths) == sorted(set(current) - set(previous))
            assert sorted(report.deleted.paths) == sorted(set(previous) - set(current))
            changed = sorted(p for p in set(current) & set(previous) if differs(previous[p], current[p])
                             and (p not in delivered or differs(delivered[p], current[p])))
            if compare != "hash":
                assert sorted(report.modified.paths) == changed
            expected_pending = sorted(p for p in current if p not in delivered or (
                differs(delivered[p], current[p]) if compare != "hash" else
                open(os.path.join(root, p), "rb").read() != b"z" * delivered[p][0]))
            assert pending_paths(index) == expected_pending
            if deliver:
                deliver_all(index)
                delivered = dict(current)
            delivered = dict((p, v) for p, v in delivered.items() if p in current)
            previous = current
        index.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


EDIT_KINDS = ["write", "write", "write", "touch", "delete", "rmdir", "deliver"]

if HAS_HYPOTHESIS:
    edit = st.tuples(st.sampled_from(EDIT_KINDS), st.sampled_from(DIRS), st.sampled_from(NAMES),
                     st.integers(min_value=0, max_value=3))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rounds=st.lists(st.lists(edit, min_size=1, max_size=8), min_size=1, max_size=6),
           compare=st.sampled_from(["mtime", "mtime_size"]), workers=st.sampled_from([1, 2]))
    def test_property_changes_equal_brute_force(rounds, compare, workers):
        check_property(rounds, compare, workers)


@pytest.mark.parametrize("seed", range(15))
def test_property_seeded(seed):
    rng = random.Random(seed)
    rounds = [[(rng.choice(EDIT_KINDS), rng.choice(DIRS), rng.choice(NAMES), rng.randrange(4))
               for _edit in range(rng.randrange(1, 10))] for _round in range(rng.randrange(1, 7))]
    check_property(rounds, ["mtime", "mtime_size", "hash"][seed % 3], workers=1 + seed % 2)
