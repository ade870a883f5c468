# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""dir_trie_sync through ansible-playbook: deletes and transfers of one path in the right order,
files removed while their task runs, a destination removed while it fails."""

from __future__ import annotations

import os
import uuid

import pytest

from ansible_collections.scidata.replication.plugins.module_utils import _pathindex
from globus_setup import DST, DST2, SRC, client_env

MODULE = "scidata.replication.dir_trie_sync"


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()
    yield
    emulator.reset()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def run(ansible, emulator, args, wait=True):
    result, output = ansible.run(MODULE, args, extra_env=client_env(emulator))
    assert not result.get("failed"), (result, output[-3000:])
    if wait:
        emulator.wait_idle()
    return result


@pytest.fixture
def job(emulator, tmp_path):
    name = "v" + uuid.uuid4().hex[:8]
    root = str(emulator.root / "src" / name)
    write(os.path.join(root, "out", "result.dat"), b"version 1")
    write(os.path.join(root, "out", "other.dat"), b"other")
    args = {"job": name, "src_dir": root, "source_collection": SRC, "source_path": "/" + name,
            "destinations": [{"collection": DST, "path": "/%s-out" % name}], "state_db": str(tmp_path / "state.db"),
            "index_dir": str(tmp_path), "lock_file": str(tmp_path / "job.lock"), "delete_destination": True}
    return dict(name=name, root=root, args=args, dst=str(emulator.root / "dst" / (name + "-out")),
                index=_pathindex.index_path(str(tmp_path), name))


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_a_file_recreated_while_its_delete_waits_is_sent_after_the_delete(ansible, emulator, job):
    args, root = job["args"], job["root"]
    run(ansible, emulator, args)
    assert read(os.path.join(job["dst"], "out", "result.dat")) == b"version 1"
    # The output is removed for reprocessing; its delete task stops INACTIVE at the destination.
    os.unlink(os.path.join(root, "out", "result.dat"))
    emulator.add_fault(kind="inactive", path_prefix="/%s-out/" % job["name"], count=1)
    removed = run(ansible, emulator, args, wait=False)
    assert [d["paths"] for d in removed["deletes"]] == [["out/result.dat"]]
    delete_task = removed["deletes"][0]["task_id"]
    write(os.path.join(root, "out", "result.dat"), b"version 2")
    held = run(ansible, emulator, args, wait=False)
    assert held["tasks"] == [] and held["pending"] == 1
    assert held["reason"] == "the pending files wait for deletes on the destination to finish"
    emulator.admin("POST", "/_emulator/tasks/%s/resume" % delete_task)
    emulator.wait_idle()
    sent = run(ansible, emulator, args)
    assert [t["paths"] for t in sent["tasks"]] == [["out/result.dat"]]
    done = run(ansible, emulator, args)
    assert done["changed"] is False and done["pending"] == 0 and done["deletes_pending"] == 0
    assert read(os.path.join(job["dst"], "out", "result.dat")) == b"version 2"


def test_a_file_removed_while_its_task_runs_is_deleted_after_it(ansible, emulator, job):
    args, root = job["args"], job["root"]
    emulator.add_fault(kind="inactive", path_prefix="/%s/out/" % job["name"], count=1)
    first = run(ansible, emulator, args, wait=False)
    transfer_task = first["tasks"][0]["task_id"]
    os.unlink(os.path.join(root, "out", "result.dat"))
    second = run(ansible, emulator, args, wait=False)
    assert second["deletes"] == [] and second["deletes_pending"] == 1  # not before the transfer ends
    emulator.admin("POST", "/_emulator/tasks/%s/resume" % transfer_task)
    emulator.wait_idle()
    for _round in range(4):
        last = run(ansible, emulator, args)
        if not (last["pending"] or last["deletes_pending"] or last["open_tasks"]):
            break
    assert last["changed"] is False
    assert not os.path.exists(os.path.join(job["dst"], "out", "result.dat"))
    assert read(os.path.join(job["dst"], "out", "other.dat")) == b"other"


def test_removing_a_failing_destination_lets_the_job_finish(ansible, emulator, job):
    name = job["name"]
    args = dict(job["args"], destinations=job["args"]["destinations"] + [{"collection": DST2, "path": "/" + name}])
    emulator.add_fault(kind="fail", path_prefix="/%s/" % name, collection_id=DST2, code="ENDPOINT_ERROR",
                       description="injected failure")
    run(ansible, emulator, args)
    stuck = run(ansible, emulator, args)
    assert stuck["pending"] == 2 and stuck["settled"]["failed"] == 1
    emulator.admin("DELETE", "/_emulator/faults")
    emulator.wait_idle()
    alone = run(ansible, emulator, job["args"])
    assert alone["pending"] == 0 and alone["reason"] == "nothing to send"
    assert read(os.path.join(job["dst"], "out", "result.dat")) == b"version 1"


def test_a_file_that_keeps_failing_is_quarantined_and_the_rest_replicated(ansible, emulator, job):
    args, root = dict(job["args"], items_per_task=10, file_retry_backoff=0), job["root"]
    for number in range(5):
        write(os.path.join(root, "out", "f%d.dat" % number), b"data %d" % number)
    emulator.add_fault(kind="event", code="PERMISSION_DENIED", fatal=True,
                       path_prefix="/%s/out/other.dat" % job["name"])
    for _round in range(8):
        last = run(ansible, emulator, args)
        if last["reason"] and "quarantined" in last["reason"]:
            break
    assert last["quarantined"]["count"] == 1 and last["pending"] == 1
    (failed,) = last["quarantined"]["files"]
    assert failed["path"] == "out/other.dat" and "PERMISSION_DENIED" in failed["reason"] and failed["attempts"] >= 3
    assert not os.path.exists(os.path.join(job["dst"], "out", "other.dat"))
    for number in range(5):
        assert read(os.path.join(job["dst"], "out", "f%d.dat" % number)) == b"data %d" % number
    assert read(os.path.join(job["dst"], "out", "result.dat")) == b"version 1"
    # Once readable (changed), it is sent and the quarantine ends.
    emulator.admin("DELETE", "/_emulator/faults")
    write(os.path.join(root, "out", "other.dat"), b"fixed")
    run(ansible, emulator, args)
    done = run(ansible, emulator, args)
    assert done["pending"] == 0 and done["quarantined"]["count"] == 0
    assert read(os.path.join(job["dst"], "out", "other.dat")) == b"fixed"


def test_index_inside_the_tree_special_files_and_a_marking_of_a_missing_path(ansible, emulator, job, tmp_path):
    root = job["root"]
    args = dict(job["args"], index_dir=os.path.join(root, ".index"))
    os.mkfifo(os.path.join(root, "out", "pipe"))
    first, output = ansible.run(MODULE, args, extra_env=client_env(emulator), verbosity=1)
    assert not first.get("failed"), output[-3000:]
    emulator.wait_idle()
    assert any("not regular files" in w and "out/pipe" in w for w in first["warnings"])
    run(ansible, emulator, args)
    assert sorted(os.listdir(job["dst"])) == ["out"]  # no .index directory replicated
    assert sorted(os.listdir(os.path.join(job["dst"], "out"))) == ["other.dat", "result.dat"]
    index = _pathindex.index_path(os.path.join(root, ".index"), job["name"])
    before = os.stat(index).st_mtime_ns
    marked, _output = ansible.run(MODULE, {"job": job["name"], "state": "marked", "src_dir": root,
                                           "index_dir": os.path.join(root, ".index"), "subpath": "nowhere",
                                           "as_of": 0, "state_db": args["state_db"]},
                                  extra_env=client_env(emulator))
    assert marked["failed"] and "subpath nowhere does not exist" in marked["msg"]
    assert os.stat(index).st_mtime_ns == before
