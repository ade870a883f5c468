# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""dir_trie_sync through ansible-playbook against the Globus API emulator (SQLite and PostgreSQL).

The emulator really copies files, so every test checks the destination directories on disk, the
job's index, the state database and the tasks the emulator received.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from ansible_collections.scidata.replication.plugins.module_utils import _pathindex
from ansible_collections.scidata.replication.plugins.module_utils._state import StateDB
from globus_setup import DST, DST2, SRC, client_env

MODULE = "scidata.replication.dir_trie_sync"
HOSTILE = ["with space.nc", "new\nline.nc", "-leading-dash.nc", "$(touch pwned).nc", "ünïcødé.nc",
           "quote'\"s.nc"]


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()


def write(path, data, mtime=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def make_tree(root, stamp):
    """A small tree: nested files, hostile names, an empty directory, a symlink and a name that
    is not valid UTF-8. Returns the relative paths of the files that must be replicated."""
    files = {}
    for number in range(3):
        for depth in ("", "a/", "a/b/", "a/b/c/d/"):
            rel = "run%d/%sframe_%02d.h5" % (number, depth, number)
            files[rel] = os.urandom(512 + number)
    for name in HOSTILE:
        files["hostile/" + name] = name.encode("utf-8") * 3
    for rel, data in files.items():
        write(os.path.join(root, rel), data, stamp)
    os.makedirs(os.path.join(root, "empty", "deeper"))
    os.symlink("run0", os.path.join(root, "link-to-run0"))
    bad = os.path.join(os.fsencode(root), b"odd", b"bad\xff.nc")
    os.makedirs(os.path.dirname(bad))
    with open(bad, "wb") as handle:
        handle.write(b"not sent")
    return set(files)


def source_files(root):
    """Relative paths of the regular files under root that have valid UTF-8 names."""
    found = set()
    for directory, _dirs, names in os.walk(os.fsencode(root)):
        for name in names:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                continue
            try:
                found.add(os.path.relpath(path, os.fsencode(root)).decode("utf-8"))
            except UnicodeDecodeError:
                continue
    return found


def assert_replicated(source, destination, expected=None):
    """Every file of the source (or ``expected``) is at the destination with the same bytes."""
    expected = source_files(source) if expected is None else expected
    for rel in expected:
        with open(os.path.join(source, rel), "rb") as left, open(os.path.join(destination, rel), "rb") as right:
            assert left.read() == right.read(), rel


def db_rows(url, sql, params=()):
    db = StateDB(url)
    try:
        return db.query(sql, params)
    finally:
        db.close()


def index_rows(path, sql, params=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def run(ansible, emulator, args, **kwargs):
    result, output = ansible.run(MODULE, args, extra_env=client_env(emulator), **kwargs)
    assert not result.get("failed"), (result, output[-3000:])
    return result


def task_paths(emulator):
    """{destination collection: [source paths of every item of every task]}"""
    carried = {}
    for task in emulator.tasks():
        for item in task["items"]:
            carried.setdefault(task["destination_endpoint_id"], []).append(item["source_path"])
    return carried


@pytest.fixture
def job(emulator, tmp_path, state_db_url):
    """A fresh job: its source tree under the emulator's source collection and two destinations."""
    name = "j" + uuid.uuid4().hex[:8]
    root = str(emulator.root / "src" / name)
    os.makedirs(root)
    files = make_tree(root, time.time() - 3600)
    args = {
        "job": name, "src_dir": root, "source_collection": SRC, "source_path": "/" + name,
        "destinations": [{"collection": DST, "path": "/replica/" + name}, {"collection": DST2, "path": "/copy-" + name}],
        "state_db": state_db_url, "index_dir": str(tmp_path / "index"), "items_per_task": 4, "max_active_tasks": 10,
        "max_submissions_per_run": 20,
        "lock_file": str(tmp_path / "job.lock"),
    }
    return dict(name=name, root=root, files=files, args=args, state_db=state_db_url,
                index=_pathindex.index_path(str(tmp_path / "index"), name),
                dst=str(emulator.root / "dst" / "replica" / name), dst2=str(emulator.root / "dst2" / ("copy-" + name)))


def test_replicates_only_what_changed(ansible, emulator, job):
    args, root = job["args"], job["root"]
    top_mtime = os.stat(root).st_mtime_ns

    # Check mode: the plan, and nothing anywhere (no index, no state, no API writes).
    planned = run(ansible, emulator, args, check=True)
    assert planned["changed"] is True
    assert planned["counts"]["new"] == len(job["files"]) == 18
    assert planned["counts"]["symlinks"] == 1 and planned["counts"]["skipped"] == 1
    # odd/ holds only the file whose name is not UTF-8: nothing in it is sent, so it is created empty.
    assert planned["counts"]["empty_dirs"] == 2 and sorted(planned["samples"]["empty_dirs"]) == ["empty/deeper", "odd"]
    assert sum(t["items"] for t in planned["tasks"]) == 2 * 18 and all(t["items"] <= 4 for t in planned["tasks"])
    assert not os.path.exists(job["index"]) and not os.path.exists(os.path.dirname(job["index"]))
    assert emulator.tasks() == []
    assert all(r["method"] == "GET" or r["path"].endswith("/token") for r in emulator.requests())
    if job["state_db"].startswith("/"):
        assert not os.path.exists(job["state_db"])
    else:
        assert StateDB(job["state_db"]).schema_version() == 0

    first = run(ansible, emulator, args)
    assert first["changed"] is True and first["counts"]["new"] == 18
    assert first["directories_created"] == 2 and first["pending"] == 18 and first["in_flight"] == 18
    assert any("UTF-8" in w for w in first.get("warnings", [])) and any("symbolic" in w for w in first["warnings"])
    assert sum(t["items"] for t in first["tasks"]) == 36
    assert all(t["sync_level"] == "mtime" and t["code"] == "Accepted" for t in first["tasks"])
    emulator.wait_idle()
    assert_replicated(root, job["dst"], job["files"])
    assert_replicated(root, job["dst2"], job["files"])
    assert os.path.isdir(os.path.join(job["dst"], "empty", "deeper"))
    assert os.path.isdir(os.path.join(job["dst2"], "empty", "deeper"))
    assert not os.path.exists(os.path.join(job["dst"], "link-to-run0"))
    assert os.listdir(os.path.join(job["dst"], "odd")) == []
    tasks = db_rows(job["state_db"], "SELECT job, status, request FROM globus_tasks ORDER BY id")
    assert len(tasks) == len(emulator.tasks()) == len(first["tasks"])
    assert {t["job"] for t in tasks} == {job["name"]}
    request = json.loads(tasks[0]["request"])
    assert request["preserve_timestamp"] is True and request["sync_level"] == "mtime"
    assert all(item["recursive"] is False for item in request["DATA"])

    # Second run: settles the tasks, finds nothing new, sends nothing.
    second = run(ansible, emulator, args)
    assert second["changed"] is False and second["tasks"] == [], second
    assert second["settled"]["succeeded"] == len(first["tasks"]) and second["settled"]["files_transferred"] == 36
    assert [d["files_transferred"] for d in second["settled"]["destinations"]] == [18, 18]
    assert second["pending"] == 0 and second["in_flight"] == 0
    job_row = db_rows(job["state_db"], "SELECT kind, source, files_indexed, files_pending, last_result "
                                       "FROM sync_jobs WHERE name = ?", (job["name"],))[0]
    assert (job_row["kind"], job_row["source"], job_row["files_indexed"], job_row["files_pending"]) == (
        "dir_trie_sync", root, 18, 0)
    assert json.loads(job_row["last_result"])["counts"]["unchanged"] == 18

    # Rewrite a file deep in the tree in place (same size: the directories' mtimes do not move),
    # add an empty directory, delete a file.
    deep = os.path.join(root, "run2/a/b/c/d/frame_02.h5")
    parents = [os.path.dirname(deep), root]
    before = [os.stat(p).st_mtime_ns for p in parents]
    with open(deep, "r+b") as handle:
        handle.write(b"rewritten in place")
    os.utime(deep, (time.time() + 5, time.time() + 5))
    assert [os.stat(p).st_mtime_ns for p in parents] == before and os.stat(root).st_mtime_ns == top_mtime
    os.makedirs(os.path.join(root, "run1", "new-empty"))
    os.unlink(os.path.join(root, "run0/a/frame_00.h5"))

    plan = run(ansible, emulator, args, check=True)
    assert (plan["counts"]["modified"], plan["counts"]["new"], plan["counts"]["deleted"],
            plan["counts"]["empty_dirs"]) == (1, 0, 1, 1)
    assert plan["samples"]["modified"] == ["run2/a/b/c/d/frame_02.h5"]
    assert plan["samples"]["deleted"] == ["run0/a/frame_00.h5"]
    assert [t["paths"] for t in plan["tasks"]] == [["run2/a/b/c/d/frame_02.h5"]] * 2
    assert index_rows(job["index"], "SELECT COALESCE(SUM(pending), 0) FROM dirs")[0][0] == 0  # untouched

    third = run(ansible, emulator, args)
    assert third["changed"] is True and third["directories_created"] == 1
    assert [(t["items"], t["paths"]) for t in third["tasks"]] == [(1, ["run2/a/b/c/d/frame_02.h5"])] * 2
    emulator.wait_idle()
    assert_replicated(root, job["dst"], job["files"] - {"run0/a/frame_00.h5"})
    assert os.path.exists(os.path.join(job["dst"], "run0/a/frame_00.h5"))  # never deleted unless asked
    assert os.path.isdir(os.path.join(job["dst2"], "run1", "new-empty"))

    fourth = run(ansible, emulator, args)
    assert fourth["changed"] is False and fourth["tasks"] == [] and fourth["pending"] == 0

    # Touching one file sends exactly that file.
    touched = os.path.join(root, "hostile", "new\nline.nc")
    os.utime(touched, (time.time() + 10, time.time() + 10))
    fifth = run(ansible, emulator, args)
    assert [t["paths"] for t in fifth["tasks"]] == [["hostile/new\nline.nc"]] * 2
    emulator.wait_idle()
    sixth = run(ansible, emulator, args)
    assert sixth["changed"] is False and sixth["tasks"] == []
    carried = task_paths(emulator)
    assert carried[DST].count("/%s/hostile/new\nline.nc" % job["name"]) == 2
    assert carried[DST].count("/%s/run2/a/b/c/d/frame_02.h5" % job["name"]) == 2
    assert carried[DST].count("/%s/run1/frame_01.h5" % job["name"]) == 1


def test_wide_tree_is_rescanned_by_scan_workers(ansible, emulator, tmp_path):
    """A tree of 265 directories: the first scan is done in one process, the rescans by two
    scan workers, and they find exactly what changed, deep or new, and nothing on a rerun."""
    name = "w" + uuid.uuid4().hex[:8]
    root = str(emulator.root / "src" / name)
    stamp = time.time() - 3600
    for run_number in range(24):
        for scan_number in range(10):
            write(os.path.join(root, "r%02d/s%d/frame.h5" % (run_number, scan_number)), os.urandom(64), stamp)
    index_dir = str(tmp_path / "index")
    args = {"job": name, "src_dir": root, "source_collection": SRC, "source_path": "/" + name,
            "destinations": [{"collection": DST, "path": "/wide/" + name}], "state_db": str(tmp_path / "state.db"),
            "index_dir": index_dir, "scan_workers": 2, "lock_file": str(tmp_path / "job.lock")}
    destination = str(emulator.root / "dst" / "wide" / name)
    first = run(ansible, emulator, args)
    assert first["scan_workers"] == 0 and first["counts"]["new"] == 240
    emulator.wait_idle()
    assert_replicated(root, destination)
    settled = run(ansible, emulator, args)
    assert settled["scan_workers"] == 2 and settled["changed"] is False and settled["counts"]["unchanged"] == 240

    rewritten = ["r03/s7/frame.h5", "r21/s0/frame.h5"]
    for rel in rewritten:
        write(os.path.join(root, rel), os.urandom(64), stamp + 60)
    write(os.path.join(root, "r10/s4/new/more.h5"), b"new", stamp)
    os.unlink(os.path.join(root, "r17/s2/frame.h5"))
    index_before = open(_pathindex.index_path(index_dir, name), "rb").read()
    plan = run(ansible, emulator, args, check=True)
    assert plan["changed"] is True and plan["scan_workers"] == 2
    assert (plan["counts"]["modified"], plan["counts"]["new"], plan["counts"]["deleted"]) == (2, 1, 1)
    assert sorted(plan["samples"]["modified"]) == rewritten and plan["samples"]["deleted"] == ["r17/s2/frame.h5"]
    assert open(_pathindex.index_path(index_dir, name), "rb").read() == index_before
    assert len(emulator.tasks()) == 1

    applied = run(ansible, emulator, args)
    assert applied["scan_workers"] == 2
    assert sorted(applied["tasks"][0]["paths"]) == sorted(rewritten + ["r10/s4/new/more.h5"])
    emulator.wait_idle()
    assert_replicated(root, destination)
    again = run(ansible, emulator, args)
    assert again["changed"] is False and again["tasks"] == [] and again["pending"] == 0
    assert again["scan_workers"] == 2 and again["counts"]["unchanged"] == 240


@pytest.fixture
def sqlite_job(emulator, tmp_path):
    name = "s" + uuid.uuid4().hex[:8]
    root = str(emulator.root / "src" / name)
    files = {}
    for number in range(6):
        rel = "d%d/sub/f%d.dat" % (number % 3, number)
        files[rel] = os.urandom(100 + number)
        write(os.path.join(root, rel), files[rel], time.time() - 7200)
    args = {"job": name, "src_dir": root, "source_collection": SRC, "source_path": "/" + name,
            "destinations": [{"collection": DST, "path": "/%s-out" % name}], "state_db": str(tmp_path / "state.db"),
            "lock_file": str(tmp_path / "job.lock"), "lock_timeout": 60}
    return dict(name=name, root=root, files=set(files), args=args, dst=str(emulator.root / "dst" / (name + "-out")),
                state_db=str(tmp_path / "state.db"),
                index=_pathindex.index_path(str(tmp_path), name))


def test_failed_task_keeps_files_pending_and_retries_with_checksum(ansible, emulator, sqlite_job, state_db_url):
    args = dict(sqlite_job["args"], items_per_task=2, state_db=state_db_url)
    emulator.add_fault(kind="fail", path_prefix="/%s/d1/" % sqlite_job["name"], count=1, code="ENDPOINT_ERROR",
                       description="injected failure")
    first = run(ansible, emulator, args)
    assert len(first["tasks"]) == 3
    emulator.wait_idle()
    second = run(ansible, emulator, args)
    assert second["settled"] == dict(succeeded=2, failed=1, files_transferred=4, files_to_retry=2, forgotten=0,
                                     destinations=[dict(destination_collection=DST, files_transferred=4,
                                                        destination_path="/%s-out" % sqlite_job["name"])])
    assert [(t["paths"], t["sync_level"]) for t in second["tasks"]] == [
        (["d1/sub/f1.dat", "d1/sub/f4.dat"], "checksum")]
    emulator.wait_idle()
    third = run(ansible, emulator, args)
    assert third["changed"] is False and third["tasks"] == [] and third["pending"] == 0
    assert third["settled"]["files_transferred"] == 2
    assert_replicated(sqlite_job["root"], sqlite_job["dst"])
    statuses = [r["status"] for r in db_rows(state_db_url, "SELECT status FROM globus_tasks ORDER BY id")]
    assert statuses == ["SUCCEEDED", "FAILED", "SUCCEEDED", "SUCCEEDED"]


def test_overlapping_runs_one_reports_locked(ansible, emulator, sqlite_job):
    # The first run's preflight meets a 503 with Retry-After, so it holds the job lock a while.
    emulator.add_fault(kind="http_error", status=503, retry_after=4, count=1, http_path="/endpoint/")
    args = dict(sqlite_job["args"], lock_timeout=0)
    process, result_file = ansible.playbook(MODULE, args, extra_env=client_env(emulator), name="first")
    deadline = time.monotonic() + 60
    while not any(r["status"] == 503 for r in emulator.requests()):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    second = run(ansible, emulator, args)
    assert second["locked"] is True and second["changed"] is False and "tasks" not in second
    output = process.communicate(timeout=120)[0]
    with open(result_file) as handle:
        first = json.load(handle)
    assert not first.get("failed"), output[-2000:]
    assert first["changed"] is True and sum(t["items"] for t in first["tasks"]) == 6
    assert len(emulator.tasks()) == len(first["tasks"])


def test_marked_and_reset(ansible, emulator, sqlite_job):
    root, args = sqlite_job["root"], sqlite_job["args"]
    old = time.time() - 86400 * 10
    for rel in ("d0/sub/f0.dat", "d1/sub/f1.dat", "d2/sub/f2.dat"):
        os.utime(os.path.join(root, rel), (old, old))
    # First deployment: everything up to five days ago is already at the destination.
    marked = run(ansible, emulator, {"job": args["job"], "state": "marked", "src_dir": root,
                                     "state_db": args["state_db"],
                                     "as_of": time.strftime("%Y-%m-%dT%H:%M:%S+00:00",
                                                            time.gmtime(time.time() - 86400 * 5))})
    assert marked["changed"] is True and marked["marked"]["transferred"] == 3 and marked["marked"]["to_send"] == 3
    assert isinstance(marked["marked"]["as_of"], float)
    assert index_rows(sqlite_job["index"], "SELECT typeof(value) FROM meta WHERE key = 'marked_as_of'") == [("real",)]
    assert emulator.requests() == []  # marking needs no Globus call
    first = run(ansible, emulator, args)
    assert sorted(p for t in first["tasks"] for p in t["paths"]) == ["d0/sub/f3.dat", "d1/sub/f4.dat",
                                                                     "d2/sub/f5.dat"]
    emulator.wait_idle()
    assert run(ansible, emulator, args)["tasks"] == []

    # Force a retry of one subtree: mark it with a time before all of its files.
    again = run(ansible, emulator, {"job": args["job"], "state": "marked", "src_dir": root,
                                    "state_db": args["state_db"], "as_of": old - 60, "subpath": "d1"})
    assert (again["marked"]["subpath"], again["marked"]["transferred"], again["marked"]["to_send"]) == ("d1", 0, 2)
    retry = run(ansible, emulator, args)
    assert sorted(p for t in retry["tasks"] for p in t["paths"]) == ["d1/sub/f1.dat", "d1/sub/f4.dat"]
    emulator.wait_idle()
    run(ansible, emulator, args)

    # Reset: the index is gone (check mode only says so), and the next run offers every file.
    planned = run(ansible, emulator, {"job": args["job"], "state": "reset", "state_db": args["state_db"]}, check=True)
    assert planned["changed"] is True and os.path.exists(sqlite_job["index"])
    reset = run(ansible, emulator, {"job": args["job"], "state": "reset", "state_db": args["state_db"]})
    assert reset["changed"] is True and reset["removed"] is True and not os.path.exists(sqlite_job["index"])
    fresh = run(ansible, emulator, args)
    assert fresh["counts"]["new"] == 6 and sum(t["items"] for t in fresh["tasks"]) == 6
    emulator.wait_idle()
    assert_replicated(root, sqlite_job["dst"])


def test_preflight_failure_changes_nothing(ansible, emulator, sqlite_job):
    args = dict(sqlite_job["args"], destinations=[{"collection": "0d3a9a3e-0000-4000-8000-0000000000ff",
                                                   "path": "/x"}])
    result, _output = ansible.run(MODULE, args, extra_env=client_env(emulator))
    assert result["failed"] and "preflight failed" in result["msg"]
    assert not os.path.exists(sqlite_job["index"]) and not os.path.exists(sqlite_job["state_db"])
    assert emulator.tasks() == []
    missing = dict(sqlite_job["args"], src_dir=sqlite_job["root"] + "-missing")
    result, _output = ansible.run(MODULE, missing, extra_env=client_env(emulator))
    assert result["failed"] and "src_dir" in result["msg"] and "is not a directory" in result["msg"]


def test_delete_destination_and_filters(ansible, emulator, sqlite_job):
    root = sqlite_job["root"]
    write(os.path.join(root, "d0/sub/skip.tmp"), b"temporary")
    write(os.path.join(root, "scratch/x.dat"), b"scratch")
    args = dict(sqlite_job["args"], delete_destination=True, exclude=["*.tmp", "scratch"])
    first = run(ansible, emulator, args)
    assert first["counts"]["excluded"] == 2 and first["counts"]["new"] == 6
    emulator.wait_idle()
    run(ansible, emulator, args)
    os.unlink(os.path.join(root, "d2/sub/f2.dat"))
    second = run(ansible, emulator, args)
    assert second["counts"]["deleted"] == 1 and second["deletes"][0]["paths"] == ["d2/sub/f2.dat"]
    emulator.wait_idle()
    assert not os.path.exists(os.path.join(sqlite_job["dst"], "d2/sub/f2.dat"))
    assert os.path.exists(os.path.join(sqlite_job["dst"], "d2/sub/f5.dat"))
    assert not os.path.exists(os.path.join(sqlite_job["dst"], "scratch"))
    third = run(ansible, emulator, args)
    assert third["changed"] is False and third["deletes"] == [] and third["deletes_pending"] == 0


# -- kill test -------------------------------------------------------------------------------------
KILLER = r'''
import os, signal, sys, runpy
point, limit, module_path, args_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
from ansible_collections.scidata.replication.plugins.module_utils import _pathindex, _globus
import globus_sdk
calls = [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def counting(original, before=True):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if before and calls[0] >= limit:
            die()
        result = original(*args, **kwargs)
        if not before and calls[0] >= limit:
            die()
        return result
    return wrapper

if point == "scan":
    _pathindex.PathIndex._scan_dir = counting(_pathindex.PathIndex._scan_dir)
elif point == "statement":
    opened = _pathindex.PathIndex.open
    def open_with_handler(self):
        result = opened(self)
        def handler():
            calls[0] += 1
            if calls[0] >= limit * 20:
                die()
            return 0
        self.conn.set_progress_handler(handler, 50)
        return result
    _pathindex.PathIndex.open = open_with_handler
elif point == "commit":
    _pathindex.PathIndex.commit_now = counting(_pathindex.PathIndex.commit_now)
elif point == "committed":
    _pathindex.PathIndex.commit_now = counting(_pathindex.PathIndex.commit_now, before=False)
elif point == "linked":
    _pathindex.PathIndex.record_submission = counting(_pathindex.PathIndex.record_submission, before=False)
elif point == "persisted":
    _globus.post_submission = counting(_globus.post_submission)
    _pathindex.post_submission = counting(_pathindex.post_submission)
elif point == "posted":
    globus_sdk.TransferClient.submit_transfer = counting(globus_sdk.TransferClient.submit_transfer, before=False)
sys.argv = [module_path, args_file]
runpy.run_path(module_path, run_name="__main__")
'''
KILL_POINTS = ["scan", "statement", "commit", "committed", "linked", "persisted", "posted"]


def test_sigkill_during_scan_commit_and_submission(ansible, emulator, tmp_path, python_env):
    """42 runs killed at chosen points (during the scan, inside and around index commits, around
    the submission), with the tree edited between them; then runs to the end. The destination
    must equal the source and no file version may have been carried by two tasks."""
    name = "k" + uuid.uuid4().hex[:8]
    root = str(emulator.root / "src" / name)
    rng = random.Random(20240501)
    versions = {}
    stamp = [time.time() - 600]

    def put(rel):
        stamp[0] += 2  # a new whole second for every version: Globus compares mtimes in seconds
        write(os.path.join(root, rel), os.urandom(rng.randrange(10, 200)), stamp[0])
        versions[rel] = versions.get(rel, 0) + 1

    for number in range(40):
        put("r%d/s%d/f%02d.dat" % (number % 4, number % 3, number))
    state_db = str(tmp_path / "state.db")
    args = {"job": name, "src_dir": root, "source_collection": SRC, "source_path": "/" + name,
            "destinations": [{"collection": DST, "path": "/killed/" + name}], "state_db": state_db,
            "index_dir": str(tmp_path), "items_per_task": 5, "max_submissions_per_run": 4, "max_active_tasks": 50,
            # A file deleted after its task was submitted would fail the whole task (and its other
            # files would rightly be sent again); skipped, it stays pending until the scan prunes it.
            "skip_source_errors": True,
            "lock_file": str(tmp_path / "job.lock"), "lock_timeout": 30}
    args_file = str(tmp_path / "args.json")
    with open(args_file, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    killer = str(tmp_path / "killer.py")
    with open(killer, "w") as handle:
        handle.write(KILLER)
    module_path = os.path.join(os.path.dirname(_pathindex.__file__), "..", "modules", "dir_trie_sync.py")
    env = dict(python_env, **client_env(emulator))
    emulator.configure(limits={"max_active_tasks": 100, "max_pending_tasks": 1000, "requests_per_second": 1000})
    killed = dict((point, 0) for point in KILL_POINTS)
    try:
        for trial in range(6 * len(KILL_POINTS)):
            # Every trial has something to scan, commit and submit: rewritten, new and deleted files.
            for rel in rng.sample(sorted(versions), 2):
                if os.path.exists(os.path.join(root, rel)):
                    put(rel)
            put("new/t%02d.dat" % trial)
            if trial % 5 == 4:
                os.unlink(os.path.join(root, "new/t%02d.dat" % (trial - 2)))
            point = KILL_POINTS[trial % len(KILL_POINTS)]
            process = subprocess.run([sys.executable, killer, point, str(rng.randrange(1, 3)), module_path,
                                      args_file], env=env, capture_output=True, text=True, timeout=120, check=False)
            if process.returncode == -signal.SIGKILL:
                killed[point] += 1
            else:
                assert '"failed": true' not in process.stdout, (point, process.stdout[-2000:], process.stderr[-2000:])
            if trial % 4 == 3:
                emulator.wait_idle(timeout=60)
        run_until_replicated(ansible, emulator, args)
    finally:
        emulator.configure(limits={"max_active_tasks": 3, "max_pending_tasks": 100, "requests_per_second": 20})
    assert sum(killed.values()) >= 30 and min(killed.values()) >= 3, killed
    assert_replicated(root, str(emulator.root / "dst" / "killed" / name))
    assert_each_version_sent_once(emulator, name, versions, state_db, _pathindex.index_path(str(tmp_path), name))


def run_until_replicated(ansible, emulator, args, rounds=6):
    """Runs to the end after interrupted ones: until nothing is pending, in flight or sent."""
    for _round in range(rounds):
        emulator.wait_idle(timeout=60)
        final = run(ansible, emulator, args)
        if final["pending"] == 0 and not final["tasks"] and final["open_tasks"] == 0:
            return final
    raise AssertionError("not converged: %s" % final)


def assert_each_version_sent_once(emulator, name, versions, state_db, index):
    """No file was carried by more tasks than it had versions; every task recorded and settled."""
    carried = {}
    for path in task_paths(emulator)[DST]:
        carried[path] = carried.get(path, 0) + 1
    twice = dict((path, count) for path, count in carried.items()
                 if count > versions[path[len(name) + 2:]])
    assert not twice, twice
    rows = db_rows(state_db, "SELECT submission_id, status FROM globus_tasks")
    assert len(rows) == len(emulator.tasks()) and all(r["status"] == "SUCCEEDED" for r in rows)
    assert index_rows(index, "SELECT count(*) FROM subs") == [(0,)]
