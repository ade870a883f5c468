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
    # A lock of this test's own: other test sessions on the machine may run jobs of the same name.
    args = dict(args, lock_file=os.path.join(ansible.workdir, module + ".lock"))
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
    posts = emulator.requests("/v0.10/transfer$")
    assert sorted(r["status"] for r in posts if r["method"] == "POST") == [202, 400]
    assert os.path.isfile(str(emulator.root / "dst" / "good" / good / "a.nc"))


def test_task_the_identity_cannot_see_becomes_lost_and_its_items_go_again(ansible, emulator, tmp_path):
    state_db = str(tmp_path / "state.db")
    dataset, = make_datasets(emulator, 1)
    emulator.add_fault(kind="slow", bytes_per_second=64, count=1)
    args = {"state_db": state_db, "retry_backoff": 0, "max_active_tasks": 1,
            "routes": [{"name": "r", "source_collection": SRC, "items": [dataset],
                        "destinations": [{"collection": DST, "prefix": "/lost"}]}]}
    first = run(ansible, emulator, "globus_transfer", args)
    lost_task = first["tasks"][0]["task_id"]
    emulator.reset()  # the task leaves this identity's history while it runs

    events = run(ansible, emulator, "globus_task_events", {"state_db": state_db})
    assert events["status_changes"] == {lost_task: "LOST"} and events["open_tasks"] == 0
    assert any(lost_task in w and "LOST" in w for w in events["warnings"])
    item = db_rows(state_db, "SELECT status, last_error FROM transfer_items")[0]
    assert item["status"] == "FAILED" and "LOST" in item["last_error"]
    again = run(ansible, emulator, "globus_task_events", {"state_db": state_db})
    assert again["changed"] is False and again["refreshed"] == 0

    resent = run(ansible, emulator, "globus_transfer", args)  # the lost task no longer holds the only slot
    assert [(t["items"], t["sync_level"], t["code"]) for t in resent["tasks"]] == [(1, "checksum", "Accepted")]
    settle(ansible, emulator, state_db)
    assert item_statuses(state_db) == {"/" + dataset: "SUCCEEDED"}
    assert os.path.isfile(str(emulator.root / "dst" / "lost" / dataset / "b.nc"))
    tasks = db_rows(state_db, "SELECT task_id, status FROM globus_tasks ORDER BY id")
    assert [t["status"] for t in tasks] == ["LOST", "SUCCEEDED"] and tasks[0]["task_id"] == lost_task


def test_event_history_past_1000_is_stored_as_far_as_listed_without_merging(ansible, emulator, tmp_path):
    state_db = str(tmp_path / "state.db")
    dataset, = make_datasets(emulator, 1, files=("busy.nc",))
    emulator.add_fault(kind="event", path_prefix="/" + dataset, code="ENDPOINT_TOO_BUSY", repeat=1100,
                       retry_delay=0, count=1)
    args = {"state_db": state_db, "routes": [{"name": "r", "source_collection": SRC, "items": [dataset],
                                              "destinations": [{"collection": DST, "prefix": "/busy"}]}]}
    task_id = run(ansible, emulator, "globus_transfer", args)["tasks"][0]["task_id"]
    emulator.wait_idle(timeout=60)
    listed = emulator.task(task_id)["events"][:1000]  # newest first: what the service can list
    assert len(emulator.task(task_id)["events"]) > 1000

    result = run(ansible, emulator, "globus_task_events", {"state_db": state_db})
    assert result["events_truncated"] == [task_id] and result["tasks_completed"] == [task_id]
    assert result["events_added"] == 1000
    busy = db_rows(state_db, "SELECT count(*) AS n FROM task_events WHERE code = 'ENDPOINT_TOO_BUSY'")[0]["n"]
    assert busy == sum(1 for e in listed if e["code"] == "ENDPOINT_TOO_BUSY") > 900
    row = db_rows(state_db, "SELECT events_truncated, events_ingested, status FROM globus_tasks")[0]
    assert row["events_truncated"] == 1 and row["events_ingested"] > 1000 and row["status"] == "SUCCEEDED"
    assert run(ansible, emulator, "globus_task_events", {"state_db": state_db})["changed"] is False


def test_task_whose_events_cannot_be_fetched_backs_off_and_others_go_on(ansible, emulator, tmp_path):
    state_db = str(tmp_path / "state.db")
    datasets = make_datasets(emulator, 2)
    args = {"state_db": state_db, "routes": [{"name": "r", "source_collection": SRC, "items": datasets,
                                              "destinations": [{"collection": DST, "prefix": "/fetch"}]}]}
    broken, healthy = [t["task_id"] for t in run(ansible, emulator, "globus_transfer", args)["tasks"]]
    emulator.wait_idle()
    emulator.add_fault(kind="http_error", status=502, code="ExternalError", message="event store unavailable",
                       http_path="/task/%s/event_list" % broken)

    result = run(ansible, emulator, "globus_task_events", {"state_db": state_db})
    assert result["tasks_completed"] == [healthy]
    assert [(f["task_id"], f["retry_in"]) for f in result["fetch_failed"]] == [(broken, 60)]
    assert "event store unavailable" in result["fetch_failed"][0]["error"]
    assert any(broken in w for w in result["warnings"])
    row = db_rows(state_db, "SELECT fetch_failures, fetch_retry_at, events_complete FROM globus_tasks "
                            "WHERE task_id = ?", (broken,))[0]
    assert row["fetch_failures"] == 1 and row["fetch_retry_at"] > time.time() + 30 and row["events_complete"] == 0
    assert item_statuses(state_db) == dict(("/" + d, "SUCCEEDED") for d in datasets)

    waiting = run(ansible, emulator, "globus_task_events", {"state_db": state_db})
    assert waiting["fetch_failed"] == [] and waiting["changed"] is False  # inside its backoff: not asked
    event_requests = emulator.requests("/task/%s/event_list" % broken)
    assert len(event_requests) == 1


def test_failed_shared_task_is_retried_split_so_a_healthy_item_gets_through(ansible, emulator, tmp_path):
    state_db = str(tmp_path / "state.db")
    healthy, = make_datasets(emulator, 1)
    missing = healthy.replace("ds0", "never-there")
    args = {"state_db": state_db, "items_per_task": 2, "max_attempts": 2, "retry_backoff": 0,
            "routes": [{"name": "r", "source_collection": SRC, "items": [healthy, missing],
                        "destinations": [{"collection": DST, "prefix": "/split"}]}]}
    first = run(ansible, emulator, "globus_transfer", args)
    assert [t["items"] for t in first["tasks"]] == [2]
    settle(ansible, emulator, state_db)
    assert set(item_statuses(state_db).values()) == {"FAILED"}  # the missing path failed both

    retried = run(ansible, emulator, "globus_transfer", args)
    assert sorted((t["items"], t["sync_level"]) for t in retried["tasks"]) == [(1, "checksum"), (1, "checksum")]
    settle(ansible, emulator, state_db)
    assert item_statuses(state_db) == {"/" + healthy: "SUCCEEDED", "/" + missing: "FAILED"}
    assert os.path.isfile(str(emulator.root / "dst" / "split" / healthy / "a.nc"))
    final = run(ansible, emulator, "globus_transfer", args)
    assert final["tasks"] == [] and [i["source"] for i in final["routes"]["r"]["failed_items"]] == ["/" + missing]


def test_inactive_task_is_reported_as_needing_a_login_renewal(ansible, emulator, tmp_path):
    state_db = str(tmp_path / "state.db")
    datasets = make_datasets(emulator, 2)
    emulator.add_fault(kind="inactive", code="CONSENT_REQUIRED", count=1)
    args = {"state_db": state_db, "max_active_tasks": 1,
            "routes": [{"name": "r", "source_collection": SRC, "items": datasets,
                        "destinations": [{"collection": DST, "prefix": "/inactive"}]}]}
    inactive_task = run(ansible, emulator, "globus_transfer", args)["tasks"][0]["task_id"]
    for _attempt in range(50):
        if emulator.task(inactive_task)["status"] == "INACTIVE":
            break
        time.sleep(0.1)
    run(ansible, emulator, "globus_task_events", {"state_db": state_db})

    blocked = run(ansible, emulator, "globus_transfer", args)
    route = blocked["routes"]["r"]
    assert blocked["tasks"] == [] and "INACTIVE" in route["reason"] and "login or consent" in route["reason"]
    attention = route["tasks_needing_attention"]
    assert [(a["task_id"], a["status"]) for a in attention] == [(inactive_task, "INACTIVE")]
    assert "scidata.replication.globus_login" in attention[0]["fix"]
    emulator.admin("POST", "/_emulator/tasks/%s/resume" % inactive_task)
    emulator.wait_idle()


def test_items_leave_recursive_to_the_service_unless_asked(ansible, emulator, tmp_path):
    state_db = str(tmp_path / "state.db")
    first, second = make_datasets(emulator, 2)
    plain_file, plain_directory = first + "a.nc", second.rstrip("/")
    args = {"state_db": state_db, "delete_after_success": True,
            "routes": [{"name": "r", "source_collection": SRC, "items": [plain_file, plain_directory],
                        "destinations": [{"collection": DST, "prefix": "/plain"}]}]}
    run(ansible, emulator, "globus_transfer", args)
    settle(ansible, emulator, state_db)
    assert sorted(set(item_statuses(state_db).values())) == ["SUCCEEDED"]
    sent = sorted((i["source_path"], i["recursive"]) for t in emulator.tasks() for i in t["items"])
    assert sent == [("/" + plain_file, None), ("/" + plain_directory, None)]  # left out of the request
    replica = str(emulator.root / "dst" / "plain")
    assert os.path.isfile(os.path.join(replica, plain_file))
    assert os.path.isfile(os.path.join(replica, plain_directory, "b.nc"))

    deleting = run(ansible, emulator, "globus_transfer", args)  # both kinds of path can be confirmed and deleted
    assert sorted(deleting["routes"]["r"]["deletions"]["scheduled"]) == sorted(["/" + plain_file, "/" + plain_directory])
    settle(ansible, emulator, state_db)
    source = str(emulator.root / "src")
    assert not os.path.exists(os.path.join(source, plain_file)) and os.path.isfile(os.path.join(source, first, "b.nc"))
    assert not os.path.exists(os.path.join(source, plain_directory))
