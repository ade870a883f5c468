# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Injected faults behave like the service's failures, and the real SDK reacts to them as it would."""

from __future__ import annotations

import json
import os

import globus_sdk
import pytest
from emu_support import DST_ID, GUARD_ID, SRC_ID, poll, transfer, tree, write


def statuses(emulator, path_regex):
    return [e["status"] for e in emulator.requests(path_regex)]


def test_5xx_burst_is_retried_by_the_sdk(tc, emulator):
    emulator.add_fault(kind="http_error", status=502, count=2, http_path=r"^/v0\.10/task_list$")
    listing = tc.task_list()
    assert listing.http_status == 200
    assert statuses(emulator, "task_list") == [502, 502, 200]
    assert tc.task_list().http_status == 200  # the burst is over


def test_503_burst_honours_retry_after(tc, emulator):
    emulator.add_fault(kind="http_error", status=503, count=1, retry_after=1, http_path="submission_id")
    assert tc.get_submission_id()["value"]
    assert statuses(emulator, "submission_id") == [503, 200]


def test_external_error_is_not_retried(tc, emulator):
    emulator.add_fault(kind="http_error", status=502, count=1, code="ExternalError.DirListingFailed.GCDisconnected",
                       collection_id=SRC_ID, http_path="/ls$")
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.operation_ls(SRC_ID, path="/")
    assert caught.value.code == "ExternalError.DirListingFailed.GCDisconnected"
    assert statuses(emulator, "/ls$") == [502]
    assert tc.operation_ls(SRC_ID, path="/").http_status == 200


def test_paused_task_resumes_and_finishes(tc, emulator, src, dst):
    write(src, "p/a.txt", "a")
    write(src, "p/b.txt", "b")
    emulator.add_fault(kind="pause", collection_id=DST_ID, count=1,
                       message="Paused by the administrator of Emulated destination")
    task_id = transfer(tc, emulator, [("/p", "/p", True)], wait=False)["task_id"]
    emulator.wait_idle()  # paused tasks do not hold a slot and do not count as busy

    task = tc.get_task(task_id)
    assert task["status"] == "ACTIVE" and task["is_paused"] is True
    assert task["nice_status"] == "PAUSED" and task["is_ok"] is False
    # the ESGF tool's PAUSED check: newest error event only
    newest_error = next(iter(tc.task_event_list(task_id, limit=1, query_params={"filter": "is_error:1"})))
    assert newest_error["code"] == "PAUSED" and newest_error["is_error"] is True
    assert tree(dst) == set()
    assert tc.task_list(filter="is_paused:true")["total"] == 1

    emulator.admin("POST", f"/_emulator/tasks/{task_id}/resume")
    emulator.wait_idle()
    task = tc.get_task(task_id)
    assert task["status"] == "SUCCEEDED" and task["is_paused"] is False
    assert tree(dst) == {"p/a.txt", "p/b.txt"}
    codes = [e["code"] for e in tc.task_event_list(task_id, limit=100)]
    assert codes.index("UNPAUSED") < codes.index("PAUSED")  # newest first


def test_fail_fault_sets_fatal_error_after_some_files(tc, emulator, src, dst):
    for name in ("1", "2", "3"):
        write(src, f"f/{name}.txt", name)
    emulator.add_fault(kind="fail", code="PERMISSION_DENIED", after_files=1, collection_id=DST_ID,
                       details="Error (transfer)\nMessage: 550 Permission denied")
    task = transfer(tc, emulator, [("/f", "/f", True)])
    assert task["status"] == "FAILED"
    assert task["fatal_error"] == {"code": "PERMISSION_DENIED", "description": "permission denied"}
    assert task["files_transferred"] == 1 and tree(dst) == {"f/1.txt"}
    assert task["nice_status"] is None and task["completion_time"] is not None
    assert task["subtasks_failed"] == 1


def test_inactive_task_can_be_reactivated(tc, emulator, src, dst):
    write(src, "i.txt", "i")
    emulator.add_fault(kind="inactive", collection_id=SRC_ID, count=1)
    task_id = transfer(tc, emulator, [("/i.txt", "/i.txt")], wait=False)["task_id"]
    task = poll(lambda: (t := tc.get_task(task_id))["status"] == "INACTIVE" and t)
    assert task["nice_status"] == "NO_CREDENTIALS" and task["completion_time"] is None
    assert tc.task_wait(task_id, timeout=1, polling_interval=1)  # the SDK pitfall: INACTIVE looks "done"
    assert tree(dst) == set()
    emulator.admin("POST", f"/_emulator/tasks/{task_id}/resume")
    emulator.wait_idle()
    assert tc.get_task(task_id)["status"] == "SUCCEEDED" and tree(dst) == {"i.txt"}


def test_error_events_are_retried_and_counted_as_faults(tc, emulator, src, dst):
    write(src, "busy.txt", "b")
    emulator.add_fault(kind="event", code="ENDPOINT_TOO_BUSY", repeat=3, retry_delay=0.3, collection_id=DST_ID)
    task_id = transfer(tc, emulator, [("/busy.txt", "/busy.txt")], wait=False)["task_id"]
    retrying = poll(lambda: (t := tc.get_task(task_id))["nice_status"] == "ENDPOINT_TOO_BUSY" and t)
    assert retrying["status"] == "ACTIVE" and retrying["is_ok"] is False and retrying["subtasks_retrying"] == 1
    emulator.wait_idle()
    task = tc.get_task(task_id)
    assert task["status"] == "SUCCEEDED" and task["faults"] == 3
    errors = list(tc.task_event_list(task_id, query_params={"filter": "is_error:1"}))
    assert [e["code"] for e in errors] == ["ENDPOINT_TOO_BUSY"] * 3
    assert tree(dst) == {"busy.txt"}


def test_skippable_injected_error_skips_the_file(tc, emulator, src, dst):
    write(src, "s/ok.txt", "ok")
    write(src, "s/locked.txt", "no")
    emulator.add_fault(kind="event", code="PERMISSION_DENIED", path_prefix="/s/locked", retry_delay=0)
    task = transfer(tc, emulator, [("/s", "/s", True)], skip_source_errors=True)
    assert task["status"] == "SUCCEEDED" and task["subtasks_skipped_errors"] == 1
    assert tree(dst) == {"s/ok.txt"}
    assert [s["source_path"] for s in tc.task_skipped_errors(task["task_id"])] == ["/s/locked.txt"]


def test_fatal_injected_event(tc, emulator, src):
    write(src, "gone.txt", "g")
    emulator.add_fault(kind="event", code="FILE_NOT_FOUND", fatal=True, retry_delay=0)
    task = transfer(tc, emulator, [("/gone.txt", "/gone.txt")])
    assert task["status"] == "FAILED" and task["fatal_error"]["code"] == "FILE_NOT_FOUND"


def test_slow_transfer_emits_progress_events_the_esgf_tool_can_parse(tc, emulator, src, dst):
    payload = os.urandom(60_000)
    write(src, "slow.bin", payload)
    emulator.add_fault(kind="slow", bytes_per_second=60_000, collection_id=SRC_ID)
    task_id = transfer(tc, emulator, [("/slow.bin", "/slow.bin")], wait=False)["task_id"]
    partial = poll(lambda: 0 < (t := tc.get_task(task_id))["bytes_transferred"] < len(payload) and t)
    assert partial["status"] == "ACTIVE" and partial["nice_status"] == "OK"
    emulator.wait_idle()
    task = tc.get_task(task_id)
    assert task["status"] == "SUCCEEDED" and 0 < task["effective_bytes_per_second"] <= 90_000

    # the ESGF get_events.py loop: page by limit/offset until offset + limit >= total
    limit, offset, progress = 2, 0, []
    while True:
        page = tc.task_event_list(task_id, limit=limit, offset=offset)
        for event in page:
            if event["description"] == "progress":
                details = json.loads(event["details"])
                progress.append((details["bytes_transferred"], details["mbps"], details["duration"]))
        if offset + limit >= page["total"]:
            break
        offset += limit
    assert len(progress) >= 3
    assert sum(b for b, _mbps, _duration in progress) == len(payload)
    assert all(isinstance(m, float) and isinstance(d, float) and d > 0 for _bytes, m, d in progress)
    assert open(os.path.join(dst, "slow.bin"), "rb").read() == payload


def test_consent_required_fault(tc, emulator):
    emulator.add_fault(kind="consent_required", collection_id=SRC_ID, count=1)
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.operation_ls(SRC_ID, path="/")
    err = caught.value
    assert (err.http_status, err.code) == (403, "ConsentRequired")
    assert err.info.consent_required
    assert err.info.consent_required.required_scopes == [
        f"urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/{SRC_ID}/data_access]"]
    assert tc.operation_ls(SRC_ID, path="/").http_status == 200


def test_cancel_running_task(tc, emulator, src, dst):
    write(src, "long.bin", b"x" * 50_000)
    emulator.configure(transfer_rate_bytes_per_second=10_000)
    task_id = transfer(tc, emulator, [("/long.bin", "/long.bin")], wait=False)["task_id"]
    poll(lambda: tc.get_task(task_id)["bytes_transferred"] > 0)
    response = tc.cancel_task(task_id)
    assert response["code"] == "Canceled"
    task = tc.get_task(task_id)
    assert task["status"] == "FAILED" and task["fatal_error"]["code"] == "CANCELED"
    assert next(iter(tc.task_event_list(task_id, limit=1)))["code"] == "CANCELED"
    again = tc.cancel_task(task_id)
    assert again["code"] == "TaskComplete"


def test_guarded_collection_transfers_with_consent(tc, emulator, src):
    write(src, "g.txt", "guarded")
    data = globus_sdk.TransferData(SRC_ID, GUARD_ID)
    data.add_item("/g.txt", "/g.txt")
    task_id = tc.submit_transfer(data)["task_id"]
    emulator.wait_idle()
    assert tc.get_task(task_id)["status"] == "SUCCEEDED"
    assert tree(emulator.roots["guarded"]) == {"g.txt"}
