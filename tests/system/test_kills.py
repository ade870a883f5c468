# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs killed inside the module process (SIGKILL through ansible-playbook's process tree).

Two ways to choose the moment: a point the module is known to have reached (the emulator holds
the submission POST while the test reads the state DB), and random moments after the module
process started. Each kill counts only if a live module process died; the next run takes the
job's lock without waiting, so a module that survived a kill would show up as ``locked``.
"""

from __future__ import annotations

import os
import random
import time
import uuid

import pytest

from ansible_collections.scidata.replication.plugins.module_utils import _pathindex
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state
from globus_setup import DST, SRC, client_env
from test_dir_trie_sync import assert_each_version_sent_once, assert_replicated, run_until_replicated, write
from test_globus_transfer import db_rows

TRANSFER = "scidata.replication.globus_transfer"
DIR_SYNC = "scidata.replication.dir_trie_sync"
POST_TRANSFER = r"^/v0\.10/transfer$"
BUSY_EMULATOR = {"max_active_tasks": 100, "max_pending_tasks": 1000, "requests_per_second": 1000}
DEFAULT_LIMITS = {"max_active_tasks": 3, "max_pending_tasks": 100, "requests_per_second": 20}


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()
    yield
    emulator.configure(limits=DEFAULT_LIMITS)


def run(ansible, emulator, module, args):
    result, output = ansible.run(module, args, extra_env=client_env(emulator))
    assert not result.get("failed") and not result.get("locked"), (result, output[-3000:])
    return result


def source_items(emulator, count):
    """``count`` directories with one file each under the source collection; their item paths."""
    name = "k" + uuid.uuid4().hex[:8]
    paths = []
    for number in range(count):
        directory = emulator.root / "src" / name / ("d%02d" % number)
        directory.mkdir(parents=True)
        (directory / "f.nc").write_bytes(b"%d" % number)
        paths.append("%s/d%02d/" % (name, number))
    return paths


def transfer_args(tmp_path, paths, **options):
    args = {"state_db": str(tmp_path / "state.db"), "lock_file": str(tmp_path / "job.lock"), "lock_timeout": 0,
            "max_active_tasks": 1000, "max_submissions_per_run": 1000,
            "routes": [{"name": "k", "source_collection": SRC, "items": paths,
                        "destinations": [{"collection": DST, "prefix": "/killed"}]}]}
    args.update(options)
    return args


def wait_for(predicate, what, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("not reached within %d s: %s" % (timeout, what))


def submissions(state_db):
    return db_rows(state_db, "SELECT submission_id, task_id, status FROM globus_tasks ORDER BY id")


def assert_sent_exactly_once(emulator, state_db, paths):
    """Every item in exactly one emulator task; the DB knows every task and nothing is unconfirmed."""
    tasks = emulator.tasks()
    sent = [item["source_path"] for task in tasks for item in task["items"]]
    assert sorted(sent) == sorted("/" + p for p in paths)
    db = open_state(state_db)
    try:
        assert db.scalar("SELECT count(*) FROM globus_tasks WHERE status = 'UNSUBMITTED'") == 0
        assert sorted(r["submission_id"] for r in db.query("SELECT submission_id FROM globus_tasks")) \
            == sorted(t["submission_id"] for t in tasks)
        assert db.scalar("SELECT count(*) FROM transfer_items WHERE status IN ('ACTIVE', 'SUCCEEDED')") == len(paths)
    finally:
        db.close()


def test_kill_ends_the_module_process_and_frees_its_lock(ansible, emulator, tmp_path):
    """The module blocks on a held POST; the kill must end that very process, not only ansible-playbook."""
    paths = source_items(emulator, 2)
    args = transfer_args(tmp_path, paths)
    hold = emulator.add_fault(kind="hold", method="POST", http_path=POST_TRANSFER, count=1)
    killable = ansible.start(TRANSFER, args, extra_env=client_env(emulator))
    try:
        module = killable.wait_for_module()
        assert module is not None
        wait_for(lambda: emulator.fault(hold)["held"] == 1, "the module's POST reached the emulator")
        assert killable.kill()
    finally:
        killable.stop()
        emulator.release(hold)
    assert not killable.alive(module)
    result = run(ansible, emulator, TRANSFER, args)  # lock_timeout 0: a surviving module would hold the lock
    assert [r["code"] for r in result["resubmitted"]] == ["Accepted"]


def test_globus_transfer_killed_after_the_submission_id_is_committed(ansible, emulator, tmp_path):
    """Point (a): the submission id and its request are in the DB, the POST never reached the service."""
    paths = source_items(emulator, 4)
    args = transfer_args(tmp_path, paths, items_per_task=10)  # one submission
    state_db = args["state_db"]
    hold = emulator.add_fault(kind="hold", method="POST", http_path=POST_TRANSFER, count=1)
    killable = ansible.start(TRANSFER, args, extra_env=client_env(emulator))
    try:
        wait_for(lambda: emulator.fault(hold)["held"] == 1, "the module's POST reached the emulator")
        stored = submissions(state_db)
        assert [(r["status"], r["task_id"]) for r in stored] == [("UNSUBMITTED", None)]
        assert killable.kill()
    finally:
        killable.stop()
        emulator.release(hold)
    assert emulator.tasks() == []
    assert submissions(state_db) == stored  # the kill left the committed submission as it was

    result = run(ansible, emulator, TRANSFER, args)
    assert [(r["submission_id"], r["code"]) for r in result["resubmitted"]] == [(stored[0]["submission_id"],
                                                                                 "Accepted")]
    assert result["tasks"] == []  # the items went with the resent request, not with a new one
    assert_sent_exactly_once(emulator, state_db, paths)
    emulator.wait_idle(timeout=60)


def test_globus_transfer_killed_after_the_post_before_the_task_id_is_stored(ansible, emulator, tmp_path):
    """Point (b): the service created the task, the module died before it stored the task id."""
    paths = source_items(emulator, 4)
    args = transfer_args(tmp_path, paths, items_per_task=10)  # one submission
    state_db = args["state_db"]
    hold = emulator.add_fault(kind="hold", phase="after", method="POST", http_path=POST_TRANSFER, count=1)
    killable = ansible.start(TRANSFER, args, extra_env=client_env(emulator))
    try:
        wait_for(lambda: emulator.fault(hold)["held"] == 1, "the service accepted the module's POST")
        created = emulator.tasks()
        stored = submissions(state_db)
        assert [t["submission_id"] for t in created] == [r["submission_id"] for r in stored]
        assert [(r["status"], r["task_id"]) for r in stored] == [("UNSUBMITTED", None)]
        assert killable.kill()
    finally:
        killable.stop()
        emulator.release(hold)
    assert submissions(state_db) == stored

    result = run(ansible, emulator, TRANSFER, args)
    assert [(r["task_id"], r["code"]) for r in result["resubmitted"]] == [(created[0]["task_id"], "Duplicate")]
    assert [t["task_id"] for t in emulator.tasks()] == [created[0]["task_id"]]
    assert [r["task_id"] for r in submissions(state_db)] == [created[0]["task_id"]]
    assert_sent_exactly_once(emulator, state_db, paths)
    emulator.wait_idle(timeout=60)


@pytest.mark.parametrize("phase", ["before", "after"])
def test_dir_trie_sync_killed_around_its_submission(ansible, emulator, tmp_path, phase):
    """The same two points for dir_trie_sync: its submission committed with the index's links, and
    the POST held before (never reached the service) or after the service created the task."""
    name = "s" + uuid.uuid4().hex[:8]
    root = str(emulator.root / "src" / name)
    versions = {}
    for number in range(12):
        rel = "r%d/f%02d.dat" % (number % 3, number)
        write(os.path.join(root, rel), os.urandom(50 + number), time.time() - 600)
        versions[rel] = 1
    state_db = str(tmp_path / "state.db")
    args = {"job": name, "src_dir": root, "source_collection": SRC, "source_path": "/" + name,
            "destinations": [{"collection": DST, "path": "/killed/" + name}], "state_db": state_db,
            "index_dir": str(tmp_path), "items_per_task": 100, "lock_file": str(tmp_path / "job.lock"),
            "lock_timeout": 0}
    hold = emulator.add_fault(kind="hold", phase=phase, method="POST", http_path=POST_TRANSFER, count=1)
    killable = ansible.start(DIR_SYNC, args, extra_env=client_env(emulator))
    try:
        wait_for(lambda: emulator.fault(hold)["held"] == 1, "the module's POST reached the emulator")
        stored = submissions(state_db)
        assert [(r["status"], r["task_id"]) for r in stored] == [("UNSUBMITTED", None)]
        assert len(emulator.tasks()) == (1 if phase == "after" else 0)
        assert killable.kill()
    finally:
        killable.stop()
        emulator.release(hold)
    run_until_replicated(ansible, emulator, args)
    assert [t["submission_id"] for t in emulator.tasks()] == [stored[0]["submission_id"]]
    assert_replicated(root, str(emulator.root / "dst" / "killed" / name))
    assert_each_version_sent_once(emulator, name, versions, state_db, _pathindex.index_path(str(tmp_path), name))


def test_globus_transfer_killed_at_random_moments_never_double_submits(ansible, emulator, tmp_path):
    """30 runs, each adding two items, killed at a random moment of the module's work; then one
    run to the end. Every item must be in exactly one task and nothing left unconfirmed."""
    paths = source_items(emulator, 60)
    emulator.configure(limits=BUSY_EMULATOR)
    rng = random.Random(4242)
    killed = 0
    for trial in range(30):
        killed += ansible.run_killed_after(TRANSFER, transfer_args(tmp_path, paths[:2 * (trial + 1)]),
                                           rng.uniform(0.0, 1.0), name="kill", extra_env=client_env(emulator))
    final = run(ansible, emulator, TRANSFER, transfer_args(tmp_path, paths))
    assert final["routes"]["k"]["counts"]["PENDING"] == 0
    assert killed >= 10, killed  # a run that ended before its kill does not count
    assert_sent_exactly_once(emulator, str(tmp_path / "state.db"), paths)
    emulator.wait_idle(timeout=120)


def test_dir_trie_sync_killed_at_random_moments(ansible, emulator, tmp_path):
    """24 runs over a tree wide enough for scan workers, each killed at a random moment of the
    module's work, the tree edited between them; then runs to the end."""
    name = "p" + uuid.uuid4().hex[:8]
    root = str(emulator.root / "src" / name)
    rng = random.Random(20241125)
    versions = {}
    stamp = [time.time() - 3600]

    def put(rel):
        stamp[0] += 2  # Globus compares mtimes in whole seconds
        write(os.path.join(root, rel), os.urandom(rng.randrange(10, 100)), stamp[0])
        versions[rel] = versions.get(rel, 0) + 1

    for number in range(250):
        put("r%02d/s%d/f%03d.dat" % (number // 10, number % 10, number))
    state_db = str(tmp_path / "state.db")
    args = {"job": name, "src_dir": root, "source_collection": SRC, "source_path": "/" + name,
            "destinations": [{"collection": DST, "path": "/killed/" + name}], "state_db": state_db,
            "index_dir": str(tmp_path), "items_per_task": 20, "max_submissions_per_run": 20, "max_active_tasks": 50,
            "scan_workers": 2, "skip_source_errors": True, "lock_file": str(tmp_path / "job.lock"),
            "lock_timeout": 0}
    emulator.configure(limits=BUSY_EMULATOR)
    run(ansible, emulator, DIR_SYNC, args)  # a first index, so that the killed runs scan with workers
    killed = 0
    for trial in range(24):
        for rel in rng.sample(sorted(versions), 3):
            put(rel)
        put("new/t%02d/f.dat" % trial)
        killed += ansible.run_killed_after(DIR_SYNC, args, rng.uniform(0.0, 1.5), name="kill",
                                           extra_env=client_env(emulator))
    final = run_until_replicated(ansible, emulator, args)
    assert killed >= 8, killed  # a run that ended before its kill does not count
    assert final["scan_workers"] == 2
    assert_replicated(root, str(emulator.root / "dst" / "killed" / name))
    assert_each_version_sent_once(emulator, name, versions, state_db, _pathindex.index_path(str(tmp_path), name))
