# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The per-destination delivery state of the path index: deletes, recreated paths, destinations
added and removed, on real directories."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from ansible_collections.scidata.replication.plugins.module_utils import _pathindex

A = {"collection": "A", "path": "/a"}
B = {"collection": "B", "path": "/b"}


def write(root, rel, data=b"x"):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "src"
    path.mkdir()
    return str(path)


@pytest.fixture
def index(tmp_path, src):
    index = _pathindex.PathIndex(str(tmp_path / "index.sqlite")).open()
    index.bind("job", src)
    yield index
    index.close()


def paths(files):
    return sorted(f["path"] for f in files)


def send(index, dest, name):
    """Submit every file the destination needs in one task; returns the task's row."""
    index.record_submission(name, dest, "transfer", index.candidates(dest, 100))
    return [s for s in index.open_submissions() if s["submission_id"] == name][0]


def send_delete(index, dest, name):
    index.record_submission(name, dest, "delete", gone=index.gone_paths(dest, 100))
    return [s for s in index.open_submissions() if s["submission_id"] == name][0]


def test_a_recreated_file_waits_for_the_delete_already_submitted(index, src):
    ids, _added = index.set_destinations([A])
    write(src, "out/f", b"v1")
    index.scan(src, gone_dests=ids)
    index.settle(send(index, ids[0], "t1"), "SUCCEEDED", ids)
    os.unlink(os.path.join(src, "out/f"))
    index.scan(src, gone_dests=ids)
    delete = send_delete(index, ids[0], "d1")
    write(src, "out/f", b"v2")  # reprocessed while the delete waits (e.g. INACTIVE)
    index.scan(src, gone_dests=ids)
    assert index.candidates(ids[0], 10) == [] and index.counts()["pending"] == 1
    index.settle(delete, "SUCCEEDED", ids)
    assert paths(index.candidates(ids[0], 10)) == ["out/f"]


def test_a_recreated_directory_waits_for_its_delete(index, src):
    ids, _added = index.set_destinations([A])
    write(src, "d/f", b"v1")
    index.scan(src, gone_dests=ids)
    index.settle(send(index, ids[0], "t1"), "SUCCEEDED", ids)
    shutil.rmtree(os.path.join(src, "d"))
    index.scan(src, gone_dests=ids)
    write(src, "d/g", b"new")
    os.makedirs(os.path.join(src, "d", "empty"))
    index.scan(src, gone_dests=ids)
    # The delete of d/ goes first: sent now, d/g could be removed by it.
    assert index.gone_paths(ids[0], 10) == ["d/"] and index.candidates(ids[0], 10) == []
    index.settle(send_delete(index, ids[0], "d1"), "SUCCEEDED", ids)
    assert paths(index.candidates(ids[0], 10)) == ["d/g"]


def test_a_file_removed_while_its_task_runs_is_deleted_after_the_task(index, src):
    ids, _added = index.set_destinations([A])
    write(src, "f", b"v1")
    index.scan(src, gone_dests=ids)
    transfer = send(index, ids[0], "t1")
    os.unlink(os.path.join(src, "f"))
    index.scan(src, gone_dests=ids)
    assert index.gone_paths(ids[0], 10) == []  # the task may still write it
    assert index.counts()["deletes_pending"] == 1
    index.settle(transfer, "SUCCEEDED", ids)
    assert index.gone_paths(ids[0], 10) == ["f"]


def test_a_directory_removed_while_a_task_writes_into_it_is_deleted_after_the_task(index, src):
    ids, _added = index.set_destinations([A])
    write(src, "d/e/f", b"v1")
    index.scan(src, gone_dests=ids)
    transfer = send(index, ids[0], "t1")
    shutil.rmtree(os.path.join(src, "d"))
    index.scan(src, gone_dests=ids)
    assert index.gone_paths(ids[0], 10) == []
    index.settle(transfer, "FAILED", ids)
    assert index.gone_paths(ids[0], 10) == ["d/"]


def test_a_file_delivered_to_some_destinations_is_deleted_from_them(index, src):
    ids, _added = index.set_destinations([A, B])
    write(src, "f", b"v1")
    index.scan(src, gone_dests=ids)
    to_a, to_b = send(index, ids[0], "ta"), send(index, ids[1], "tb")
    index.settle(to_a, "SUCCEEDED", ids)
    index.settle(to_b, "FAILED", ids)
    os.unlink(os.path.join(src, "f"))
    index.scan(src, gone_dests=ids)
    assert index.gone_paths(ids[0], 10) == ["f"] and index.gone_paths(ids[1], 10) == ["f"]


def test_an_empty_directory_removed_from_the_source_is_deleted(index, src):
    ids, _added = index.set_destinations([A])
    os.makedirs(os.path.join(src, "keep", "e"))
    write(src, "keep/f", b"1")
    index.scan(src, gone_dests=ids)
    for dir_id, _rel in index.unsent_empty_dirs():
        index.mark_dir_sent(dir_id)
    os.rmdir(os.path.join(src, "keep", "e"))
    index.scan(src, gone_dests=ids)
    assert index.gone_paths(ids[0], 10) == ["keep/e/"]


def test_a_file_never_sent_anywhere_needs_no_delete(index, src):
    ids, _added = index.set_destinations([A])
    write(src, "f", b"1")
    index.scan(src, gone_dests=ids)
    os.unlink(os.path.join(src, "f"))
    index.scan(src, gone_dests=ids)
    assert index.gone_paths(ids[0], 10) == [] and index.counts()["deletes_pending"] == 0


def test_removing_a_failing_destination_completes_what_the_others_hold(index, src):
    ids, _added = index.set_destinations([A, B])
    write(src, "f", b"1")
    write(src, "g", b"2")
    index.scan(src, gone_dests=ids)
    to_a, to_b = send(index, ids[0], "ta"), send(index, ids[1], "tb")
    index.settle(to_a, "SUCCEEDED", ids)
    index.settle(to_b, "FAILED", ids)
    assert index.counts()["pending"] == 2
    os.unlink(os.path.join(src, "g"))
    index.scan(src, gone_dests=ids)
    assert index.gone_paths(ids[1], 10) == ["g"]
    kept, added = index.set_destinations([A])
    assert kept == [ids[0]] and added == []
    counts = index.counts()
    assert counts["pending"] == 0 and counts["deletes_pending"] == 1  # g still goes from A


def test_a_destination_added_is_offered_only_what_it_lacks(index, src):
    ids, _added = index.set_destinations([A])
    write(src, "f", b"1")
    os.makedirs(os.path.join(src, "e"))
    index.scan(src, gone_dests=ids)
    index.settle(send(index, ids[0], "t1"), "SUCCEEDED", ids)
    ids, added = index.set_destinations([A, B])
    assert added == [ids[1]]
    assert index.candidates(ids[0], 10) == [] and paths(index.candidates(ids[1], 10)) == ["f"]
    assert [rel for _id, rel in index.unsent_empty_dirs()] == ["e"]
    index.settle(send(index, ids[1], "t2"), "SUCCEEDED", ids)
    assert index.counts()["pending"] == 0
    # A file and an empty directory both hold, removed from the source, are deleted from both.
    os.unlink(os.path.join(src, "f"))
    os.rmdir(os.path.join(src, "e"))
    index.scan(src, gone_dests=ids)
    assert index.gone_paths(ids[0], 10) == ["e/", "f"] and index.gone_paths(ids[1], 10) == ["e/", "f"]


def test_a_file_held_by_the_old_destination_only_is_deleted_there_after_a_destination_is_added(index, src):
    ids, _added = index.set_destinations([A])
    write(src, "f", b"1")
    index.scan(src, gone_dests=ids)
    index.settle(send(index, ids[0], "t1"), "SUCCEEDED", ids)
    ids, _added = index.set_destinations([A, B])
    os.unlink(os.path.join(src, "f"))
    index.scan(src, gone_dests=ids)
    assert index.gone_paths(ids[0], 10) == ["f"]


@pytest.mark.parametrize("rel, expected", [
    ("a/b/f", True), ("a/f", False), ("x", True), ("x/y", True), ("d", True), ("d/z", True), ("dd/z", False),
])
def test_under_delete(rel, expected):
    assert _pathindex.under_delete({"a/b/", "x", "d/"}, rel) is expected


def run_tasks(index, dest_ids, outcome, now):
    """Submit every file as DirTrieSync groups them and settle each task by ``outcome(paths)``."""
    candidates = index.candidates(dest_ids[0], 100, now=now)
    for files, retry in _pathindex.task_groups(candidates, lambda f: bool(f["st"] & _pathindex.RETRY)):
        index.record_submission(uuid.uuid4().hex, dest_ids[0], "transfer", files)
    for sub in index.open_submissions():
        carried = [r[0] for r in index.conn.execute("SELECT name FROM inflight WHERE sub = ?", (sub["id"],))]
        status, skipped = outcome(carried)
        index.settle(sub, status, dest_ids, skipped, reason="ENDPOINT_ERROR: injected", now=now)


def test_a_file_that_keeps_failing_is_isolated_and_quarantined_while_the_rest_goes(index, src):
    ids, _added = index.set_destinations([A])
    for number in range(9):
        write(src, "f%d" % number, b"data")
    write(src, "bad", b"unreadable at the source")
    index.scan(src, gone_dests=ids)
    index.file_retry_backoff = 60
    now, runs = 1000.0, 0
    while index.candidates(ids[0], 100, now=now):
        run_tasks(index, ids, lambda names: ("FAILED", None) if "bad" in names else ("SUCCEEDED", None), now)
        now += 61 * 2 ** runs
        runs += 1
        assert runs < 12
    assert index.counts()["pending"] == 1 and paths(index.candidates(ids[0], 100, now=now * 2)) == []
    count, sample = index.quarantined(10)
    assert count == 1 and sample[0]["path"] == "bad" and sample[0]["reason"] == "ENDPOINT_ERROR: injected"
    # A new version of the file is tried again; so is the whole tree after a marking.
    write(src, "bad", b"readable now, and longer")
    index.scan(src, gone_dests=ids)
    assert paths(index.candidates(ids[0], 100, now=now)) == ["bad"] and index.quarantined(10)[0] == 0


def test_a_file_failing_alone_backs_off(index, src):
    ids, _added = index.set_destinations([A])
    write(src, "bad", b"x")
    index.scan(src, gone_dests=ids)
    index.file_retry_backoff = 100

    def failing(_names):
        return "FAILED", None

    run_tasks(index, ids, failing, 1000.0)
    assert paths(index.candidates(ids[0], 10, now=1000.0)) == ["bad"]  # the first retry goes at once
    run_tasks(index, ids, failing, 1000.0)
    assert index.candidates(ids[0], 10, now=1099.0) == [] and paths(index.candidates(ids[0], 10, now=1100.0)) == ["bad"]
    assert index.quarantined(10)[0] == 0


def test_a_skipped_file_is_not_marked_sent_and_counts_against_itself(index, src):
    ids, _added = index.set_destinations([A])
    write(src, "ok", b"1")
    write(src, "locked", b"2")
    index.scan(src, gone_dests=ids)
    index.file_retry_backoff = 0

    def skipping(_names):
        return "SUCCEEDED", {"locked": "skipped: PERMISSION_DENIED"}

    run_tasks(index, ids, skipping, 1000.0)
    entry = index.candidates(ids[0], 10, now=1000.0)
    assert paths(entry) == ["locked"] and entry[0]["st"] & _pathindex.RETRY and index.counts()["pending"] == 1
    run_tasks(index, ids, skipping, 1000.0)
    run_tasks(index, ids, skipping, 1000.0)
    count, sample = index.quarantined(10)
    assert count == 1 and sample[0] == dict(path="locked", attempts=3, reason="skipped: PERMISSION_DENIED")
    assert index.mark(0, "locked", root=src)[2] is True  # the documented way out
    assert paths(index.candidates(ids[0], 10, now=1000.0)) == ["locked"]


def test_a_forced_resend_by_marking_compares_by_checksum(index, src):
    ids, _added = index.set_destinations([A])
    write(src, "f", b"1")
    index.scan(src, gone_dests=ids)
    index.settle(send(index, ids[0], "t1"), "SUCCEEDED", ids)
    assert index.mark(0, None, root=src)[1] == 1
    (entry,) = index.candidates(ids[0], 10)
    assert entry["st"] & _pathindex.RETRY  # sync_level=checksum: a replica with a current mtime is repaired


def test_the_diff_lists_what_is_sent_and_deleted_per_destination_bounded():
    tasks = [dict(destination_collection="A", destination_path="/a", items=3, paths=["x", "y", "z"]),
             dict(destination_collection="A", destination_path="/a", items=2, paths=["w", "v"]),
             dict(destination_collection="B", destination_path="/b", items=1, paths=["x"])]
    deletes = [dict(destination_collection="A", destination_path="/a", items=1, paths=["old/"])]
    assert _pathindex.planned_diff(tasks, deletes, 4) == (
        "A:/a\n+ x\n+ y\n+ z\n+ w\n+ ... and 1 more\n- old/\nB:/b\n+ x\n")
    assert _pathindex.planned_diff([], [], 4) == ""
