# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""globus_transfer and globus_task_events left alone: skipped files, rejected requests, tasks the
identity cannot see, long event histories. Real ansible-playbook runs against the API emulator."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._state import StateDB
from globus_setup import DST, SRC, client_env


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()


def make_datasets(emulator, count, files=("a.nc", "b.nc")):
    """``count`` source directories with a few files each, written a minute ago (Globus gives
    modification and request times in whole seconds)."""
    name = "u" + uuid.uuid4().hex[:8]
    minute_ago = time.time() - 60
    datasets = []
    for number in range(count):
        directory = os.path.join(str(emulator.root / "src"), name, "ds%d" % number)
        os.makedirs(directory)
        for file_name in files:
            path = os.path.join(directory, file_name)
            with open(path, "wb") as handle:
                handle.write(os.urandom(1024 + number))
            os.utime(path, (minute_ago, minute_ago))
        os.utime(directory, (minute_ago, minute_ago))
        datasets.append("%s/ds%d/" % (name, number))
    return datasets


def db_rows(url, sql, params=()):
    db = StateDB(url)
    try:
        return db.query(sql, params)
    finally:
        db.close()


def run(ansible, emulator, module, args, **kwargs):
    result, output = ansible.run("scidata.replication." + module, args, extra_env=client_env(emulator), **kwargs)
    assert not result.get("failed"), (result, output[-3000:])
    return result


def settle(ansible, emulator, state_db):
    emulator.wait_idle(timeout=60)
    return run(ansible, emulator, "globus_task_events", {"state_db": state_db})


def item_statuses(state_db):
    return dict((r["source_path"], r["status"]) for r in db_rows(
        state_db, "SELECT source_path, status FROM transfer_items ORDER BY source_path"))


def test_skipped_file_makes_the_item_partial_and_keeps_its_source(ansible, emulator, state_db_url):
    hurt, healthy = make_datasets(emulator, 2)
    unreadable = "/" + hurt + "b.nc"
    emulator.add_fault(kind="event", path_prefix=unreadable, code="PERMISSION_DENIED", count=1, retry_delay=0)
    args = {"state_db": state_db_url, "skip_source_errors": True, "delete_after_success": True,
            "retry_backoff": 3600,
            "routes": [{"name": "move", "source_collection": SRC, "items": [hurt, healthy],
                        "destinations": [{"collection": DST, "prefix": "/partial"}]}]}
    run(ansible, emulator, "globus_transfer", args)
    settle(ansible, emulator, state_db_url)
    assert [t["status"] for t in emulator.tasks()] == ["SUCCEEDED", "SUCCEEDED"]
    assert item_statuses(state_db_url) == {"/" + hurt: "PARTIAL", "/" + healthy: "SUCCEEDED"}
    skipped = db_rows(state_db_url, "SELECT source_path, error_code FROM task_files WHERE kind = 'skipped'")
    assert [(r["source_path"], r["error_code"]) for r in skipped] == [(unreadable, "PERMISSION_DENIED")]

    planned = run(ansible, emulator, "globus_transfer", args, check=True)
    route = planned["routes"]["move"]
    assert route["deletions"]["scheduled"] == ["/" + healthy]
    assert [b["source"] for b in route["deletions"]["blocked"]] == ["/" + hurt]
    assert "PARTIAL" in route["deletions"]["blocked"][0]["reason"]
    assert route["partial_items"] == [{"source": "/" + hurt, "destination": "/partial/" + hurt, "attempts": 1,
                                       "skipped": [{"path": unreadable, "error_code": "PERMISSION_DENIED"}]}]
    assert route["counts"]["PARTIAL"] == 1

    applied = run(ansible, emulator, "globus_transfer", args)
    assert [t.get("kind") for t in applied["tasks"]] == ["delete"]  # the PARTIAL item waits for its backoff
    settle(ansible, emulator, state_db_url)
    source = str(emulator.root / "src")
    assert not os.path.exists(os.path.join(source, healthy))
    assert os.path.isfile(os.path.join(source, hurt, "b.nc"))  # never copied, so never deleted
    assert not os.path.exists(str(emulator.root / "dst" / "partial" / hurt / "b.nc"))

    # Retried per policy (the fault is spent): the whole item arrives, and only then goes.
    retried = run(ansible, emulator, "globus_transfer", dict(args, retry_backoff=0))
    assert [(t["items"], t["sync_level"]) for t in retried["tasks"]] == [(1, "checksum")]
    settle(ansible, emulator, state_db_url)
    assert item_statuses(state_db_url)["/" + hurt] == "SUCCEEDED"
    run(ansible, emulator, "globus_transfer", args)
    settle(ansible, emulator, state_db_url)
    assert os.path.isfile(str(emulator.root / "dst" / "partial" / hurt / "b.nc"))
    assert not os.path.exists(os.path.join(source, hurt))


def test_source_is_kept_when_a_destination_lacks_a_file(ansible, emulator, tmp_path):
    state_db = str(tmp_path / "state.db")
    (dataset,) = make_datasets(emulator, 1)
    args = {"state_db": state_db, "delete_after_success": True,
            "routes": [{"name": "move", "source_collection": SRC, "items": [dataset],
                        "destinations": [{"collection": DST, "prefix": "/confirm"}]}]}
    run(ansible, emulator, "globus_transfer", args)
    settle(ansible, emulator, state_db)
    assert item_statuses(state_db) == {"/" + dataset: "SUCCEEDED"}
    lost_replica = str(emulator.root / "dst" / "confirm" / dataset / "a.nc")
    os.remove(lost_replica)  # gone from the destination after the task succeeded

    result = run(ansible, emulator, "globus_transfer", args)
    deletions = result["routes"]["move"]["deletions"]
    assert deletions["scheduled"] == [] and result["tasks"] == []
    assert [b["source"] for b in deletions["blocked"]] == ["/" + dataset]
    assert "%s:/confirm/%sa.nc" % (DST, dataset) in deletions["blocked"][0]["reason"]
    assert os.path.isfile(os.path.join(str(emulator.root / "src"), dataset, "a.nc"))
    assert [t["type"] for t in emulator.tasks()] == ["TRANSFER"]


def test_rejected_submission_is_dropped_and_other_routes_go_on(ansible, emulator, tmp_path):
    state_db = str(tmp_path / "state.db")
    good, = make_datasets(emulator, 1)
    args = {"state_db": state_db, "retry_backoff": 3600,
            "routes": [{"name": "bad", "source_collection": SRC, "source_prefix": "relative", "items": ["x/"],
                        "destinations": [{"collection": DST, "prefix": "/bad"}]},
                       {"name": "good", "source_collection": SRC, "items": [good],
                        "destinations": [{"collection": DST, "prefix": "/good"}]}]}
    first = run(ansible, emulator, "globus_transfer", args)
    rejected = [t for t in first["tasks"] if t["route"] == "bad"]
    assert [t["code"] for t in rejected] == ["Rejected"] and "absolute" in rejected[0]["error"]
    assert [t["code"] for t in first["tasks"] if t["route"] == "good"] == ["Accepted"]
    assert any("rejected" in w for w in first.get("warnings", []))
    rows = db_rows(state_db, "SELECT status, last_error FROM transfer_items WHERE route = 'bad'")
    assert rows[0]["status"] == "FAILED" and "paths must be absolute" in rows[0]["last_error"]
    assert db_rows(state_db, "SELECT status FROM globus_tasks WHERE job = 'bad'")[0]["status"] == "REJECTED"
    emulator.wait_idle()

    # The next run (bad route fixed or not) never sends the refused request again.
    second = run(ansible, emulator, "globus_transfer", args)
    assert second["resubmitted"] == [] and second["tasks"] == []
    posts = emulator.admin("GET", "/_emulator/requests?path=/v0.10/transfer$")["requests"]
    assert sorted(r["status"] for r in posts if r["method"] == "POST") == [202, 400]
    assert os.path.isfile(str(emulator.root / "dst" / "good" / good / "a.nc"))
