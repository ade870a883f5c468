# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""dir_trie_sync through ansible-playbook when Globus loses sight of a task or refuses a request: the
files go again, nothing waits for ever."""

from __future__ import annotations

import os
import sqlite3
import uuid

import pytest

from globus_setup import DST, SRC
from test_dir_trie_sync_delivery import read, run, write


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()
    yield
    emulator.reset()


def task_statuses(state_db):
    with sqlite3.connect(state_db) as conn:
        return [row[0] for row in conn.execute("SELECT status FROM globus_tasks WHERE kind = 'transfer' ORDER BY id")]


@pytest.fixture
def job(emulator, tmp_path):
    name = "l" + uuid.uuid4().hex[:8]
    root = str(emulator.root / "src" / name)
    write(os.path.join(root, "out", "result.dat"), b"result")
    args = {"job": name, "src_dir": root, "source_collection": SRC, "source_path": "/" + name,
            "destinations": [{"collection": DST, "path": "/%s-out" % name}], "state_db": str(tmp_path / "state.db"),
            "index_dir": str(tmp_path), "lock_file": str(tmp_path / "job.lock")}
    return dict(name=name, root=root, args=args, dst=str(emulator.root / "dst" / (name + "-out")))


def test_files_of_a_task_this_identity_cannot_see_are_sent_again(ansible, emulator, job):
    args = job["args"]
    emulator.add_fault(kind="slow", bytes_per_second=1, count=1)
    first = run(ansible, emulator, args, wait=False)
    assert [t["paths"] for t in first["tasks"]] == [["out/result.dat"]]
    emulator.reset()  # the running task leaves this identity's history

    again = run(ansible, emulator, args)
    assert task_statuses(args["state_db"]) == ["LOST", "ACTIVE"]
    assert [(t["paths"], t["sync_level"]) for t in again["tasks"]] == [(["out/result.dat"], "checksum")]
    done = run(ansible, emulator, args)
    assert done["changed"] is False and done["pending"] == 0
    assert task_statuses(args["state_db"]) == ["LOST", "SUCCEEDED"]
    assert read(os.path.join(job["dst"], "out", "result.dat")) == b"result"


def test_a_refused_request_is_never_sent_again_and_its_files_go_in_a_new_one(ansible, emulator, job):
    args = job["args"]
    emulator.add_fault(kind="http_error", status=400, code="ClientError.BadRequest", message="refused for the test",
                       method="POST", http_path="/transfer$", count=1)
    first = run(ansible, emulator, args)
    assert [t["code"] for t in first["tasks"]] == ["Rejected"] and "refused for the test" in first["tasks"][0]["error"]
    assert task_statuses(args["state_db"]) == ["REJECTED"]

    again = run(ansible, emulator, args)
    assert again["resubmitted"] == [] and [t["code"] for t in again["tasks"]] == ["Accepted"]
    done = run(ansible, emulator, args)
    assert done["changed"] is False and done["pending"] == 0
    assert read(os.path.join(job["dst"], "out", "result.dat")) == b"result"
    posts = [r for r in emulator.requests("/transfer$") if r["method"] == "POST"]
    assert sorted(r["status"] for r in posts) == [202, 400]
