# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Paging and filters of task_list / event_list / marker lists, queueing and rate limits."""

from __future__ import annotations

import time

import globus_sdk
import pytest
from emu_support import DST_ID, OTHER_ID, OTHER_SECRET, SRC_ID, make_client, poll, transfer, write


def test_event_list_paging_and_is_error_filter(tc, emulator, src):
    write(src, "e.txt", "e")
    emulator.add_fault(kind="event", code="CONNECTION_RESET", repeat=12, retry_delay=0)
    task = transfer(tc, emulator, [("/e.txt", "/e.txt")])
    task_id = task["task_id"]
    everything = tc.task_event_list(task_id, limit=100)
    assert everything["total"] == everything["length"] == len(everything["DATA"])
    codes = [e["code"] for e in everything]
    assert codes[0] == "SUCCEEDED" and codes[-1] == "STARTED"  # newest first
    times = [e["time"] for e in everything]
    assert times == sorted(times, reverse=True)

    pages = []
    for offset in range(0, everything["total"], 5):
        page = tc.task_event_list(task_id, limit=5, offset=offset)
        assert (page["limit"], page["offset"], page["total"]) == (5, offset, everything["total"])
        pages.extend(page["DATA"])
    assert pages == everything["DATA"]
    assert list(tc.paginated.task_event_list(task_id).items()) == everything["DATA"]

    errors = tc.task_event_list(task_id, limit=100, query_params={"filter": "is_error:1"})
    assert errors["total"] == 12 and all(e["is_error"] for e in errors)
    assert task["faults"] == 12
    not_errors = tc.task_event_list(task_id, limit=100, query_params={"filter": "is_error:0"})
    assert not_errors["total"] + errors["total"] == everything["total"]

    for params in ({"limit": 1001}, {"limit": 600, "offset": 500}):
        with pytest.raises(globus_sdk.TransferAPIError) as caught:
            tc.task_event_list(task_id, **params)
        assert caught.value.http_status == 400


def test_task_list_filters_ordering_and_paging(tc, emulator, src):
    write(src, "t.txt", "t")
    ids = {}
    for label in ("alpha-1", "alpha-2", "beta"):
        ids[label] = transfer(tc, emulator, [("/t.txt", f"/{label}.txt")], label=label)["task_id"]
    delete = globus_sdk.DeleteData(DST_ID)
    delete.add_item("/beta.txt")
    ids["delete"] = tc.submit_delete(delete)["task_id"]
    emulator.wait_idle()
    emulator.configure(limits={"max_active_tasks": 0})
    ids["queued"] = transfer(tc, emulator, [("/t.txt", "/q.txt")], wait=False)["task_id"]
    tc.cancel_task(ids["queued"])

    def listed(**kwargs):
        return [t["task_id"] for t in tc.task_list(limit=100, **kwargs)]

    assert listed() == [ids[k] for k in ("queued", "delete", "beta", "alpha-2", "alpha-1")]  # newest first
    assert listed(orderby="request_time ASC")[0] == ids["alpha-1"]
    assert set(listed(filter={"status": ["SUCCEEDED"]})) == {ids[k] for k in ("alpha-1", "alpha-2", "beta", "delete")}
    assert listed(filter="status:FAILED") == [ids["queued"]]
    assert listed(filter={"label": ["beta"]}) == [ids["beta"]]
    assert set(listed(filter="label:~alpha*")) == {ids["alpha-1"], ids["alpha-2"]}
    assert listed(filter={"type": ["DELETE"]}) == [ids["delete"]]
    assert set(listed(filter={"task_id": [ids["beta"], ids["alpha-1"]]})) == {ids["beta"], ids["alpha-1"]}
    assert listed(filter="type:TRANSFER/status:SUCCEEDED/label:~ALPHA-2") == [ids["alpha-2"]]
    now = time.time()
    past = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 3600))
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + 3600))
    assert len(listed(filter=f"request_time:{past},{future}")) == 5
    assert listed(filter=f"request_time:{future},") == []
    assert set(listed(filter=f"completion_time:{past},")) == set(ids.values())

    pages = [tc.task_list(limit=2, offset=offset) for offset in (0, 2, 4)]
    assert [p["length"] for p in pages] == [2, 2, 1] and all(p["total"] == 5 for p in pages)
    assert [t["task_id"] for p in pages for t in p] == listed()
    assert [t["task_id"] for t in tc.paginated.task_list().items()] == listed()

    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.task_list(limit=10, offset=995)
    assert caught.value.http_status == 400

    other = make_client(OTHER_ID, OTHER_SECRET, consents=())
    assert other.task_list()["total"] == 0  # tasks are visible to their owner only
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        other.get_task(ids["beta"])
    assert (caught.value.http_status, caught.value.code) == (404, "ClientError.NotFound")


def test_successful_transfers_marker_paging(tc, emulator, src):
    for n in range(5):
        write(src, f"m/{n}.txt", str(n))
    emulator.configure(marker_page_size=2)
    task = transfer(tc, emulator, [("/m", "/m", True)])
    first = tc.task_successful_transfers(task["task_id"])
    assert (first["marker"], first["next_marker"], len(first["DATA"])) == (0, 2, 2)
    last = tc.task_successful_transfers(task["task_id"], marker=4)
    assert last["next_marker"] is None and len(last["DATA"]) == 1
    items = list(tc.paginated.task_successful_transfers(task["task_id"]).items())
    assert sorted(i["source_path"] for i in items) == [f"/m/{n}.txt" for n in range(5)]


def test_fourth_concurrent_task_is_queued(tc, emulator, src, dst):
    emulator.configure(transfer_rate_bytes_per_second=20_000)
    write(src, "big.bin", b"b" * 200_000)
    task_ids = [transfer(tc, emulator, [("/big.bin", f"/copy{n}.bin")], wait=False)["task_id"] for n in range(4)]

    def nice():
        return [tc.get_task(t)["nice_status"] for t in task_ids]

    assert poll(lambda: nice() == ["OK", "OK", "OK", "Queued"])
    queued = tc.get_task(task_ids[3])
    assert queued["status"] == "ACTIVE" and queued["is_ok"] is True and queued["bytes_transferred"] == 0
    assert [e["code"] for e in tc.task_event_list(task_ids[3])] == []  # never started

    # finishing (here: canceling) one running task lets the queued one start
    tc.cancel_task(task_ids[0])
    poll(lambda: tc.get_task(task_ids[3])["nice_status"] == "OK")
    for task_id in task_ids[1:]:
        tc.cancel_task(task_id)
    assert {tc.get_task(t)["status"] for t in task_ids} == {"FAILED"}


def test_delete_tasks_have_their_own_three_slots(tc, emulator, src, dst):
    emulator.configure(transfer_rate_bytes_per_second=20_000)
    write(src, "big.bin", b"b" * 200_000)
    transfers = [transfer(tc, emulator, [("/big.bin", f"/c{n}.bin")], wait=False)["task_id"] for n in range(3)]
    write(dst, "junk.txt", "j")
    delete = globus_sdk.DeleteData(DST_ID)
    delete.add_item("/junk.txt")
    delete_id = tc.submit_delete(delete)["task_id"]
    poll(lambda: tc.get_task(delete_id)["status"] == "SUCCEEDED")
    for task_id in transfers:
        tc.cancel_task(task_id)


def test_pending_task_limit(tc, emulator, src):
    emulator.configure(limits={"max_pending_tasks": 2, "max_active_tasks": 0})
    write(src, "p.txt", "p")
    for n in range(2):
        transfer(tc, emulator, [("/p.txt", f"/p{n}.txt")], wait=False)
    data = globus_sdk.TransferData(SRC_ID, DST_ID)
    data.add_item("/p.txt", "/p2.txt")
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.submit_transfer(data)
    assert (caught.value.http_status, caught.value.code) == (409, "ClientError.Conflict.TooManyPendingJobs")
    assert len(emulator.tasks()) == 2


def test_rate_limit_answers_429_with_retry_after_and_the_sdk_waits(tc, emulator):
    tc.get_submission_id()  # fetch the token before the limit tightens
    emulator.configure(limits={"requests_per_second": 2, "rate_window_seconds": 1})
    with tc.retry_config.tune(max_retries=0):
        tc.get_submission_id()
        tc.get_submission_id()
        with pytest.raises(globus_sdk.TransferAPIError) as caught:
            tc.get_submission_id()
    assert caught.value.http_status == 429
    assert int(caught.value.headers["Retry-After"]) >= 1

    started = time.monotonic()
    for _attempt in range(3):
        assert tc.get_submission_id()["value"]  # the SDK's RetryConfig sleeps Retry-After and retries
    assert time.monotonic() - started >= 0.9
    codes = [e["status"] for e in emulator.requests("submission_id")]
    assert codes.count(429) >= 2 and codes[-1] == 200
