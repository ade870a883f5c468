# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How task outcomes are read: identical events, why a task is paused."""

from __future__ import annotations

import hashlib

import pytest
import responses

from ansible_collections.scidata.replication.plugins.module_utils import _globus, _transfers

TASK = "42c7a9d4-ea4f-11f1-8f3c-0242ac120002"
PAUSE_INFO_URL = "https://transfer.api.globus.org/v0.10/task/%s/pause_info" % TASK


@pytest.fixture(autouse=True)
def recorded_api(monkeypatch):
    for name in ("GLOBUS_SDK_ENVIRONMENT", "GLOBUS_SDK_SERVICE_URL_TRANSFER", "GLOBUS_SDK_SERVICE_URL_AUTH"):
        monkeypatch.delenv(name, raising=False)
    responses.start()
    yield
    responses.stop()
    responses.reset()


@pytest.fixture
def client():
    return _globus.transfer_client({"access_token": "test-token", "max_retries": 0})


def busy(second):
    return {"time": "2024-05-02T10:15:0%d+00:00" % second, "code": "ENDPOINT_TOO_BUSY", "is_error": True,
            "description": "endpoint too busy", "details": "Too many connections"}


def test_identical_events_in_one_second_stay_apart():
    rows = _transfers.event_rows(TASK, [busy(1)] * 300 + [busy(2)])
    assert len({r["fingerprint"] for r in rows}) == 301
    # The first of a kind keeps the fingerprint stored before repeats were told apart.
    first = "\x1f".join([busy(1)["time"], "ENDPOINT_TOO_BUSY", "endpoint too busy", "Too many connections"])
    assert rows[0]["fingerprint"] == hashlib.sha1(first.encode("utf-8")).hexdigest()
    assert _transfers.event_rows(TASK, [busy(1)] * 300 + [busy(2)]) == rows  # the same listing, the same rows


def test_pause_reason_is_the_message_of_the_rule_holding_the_task(client):
    responses.add(responses.GET, PAUSE_INFO_URL, json={
        "DATA_TYPE": "pause_info_limited", "source_pause_message": None, "destination_pause_message": None,
        "pause_rules": [{"DATA_TYPE": "pause_rule_limited", "message": "Storage maintenance until 14:00 UTC",
                         "pause_task_transfer_read": True}]})
    reason = _transfers.pause_reason(client, {"task_id": TASK, "is_paused": True, "nice_status": "PAUSED"})
    assert reason == "Storage maintenance until 14:00 UTC"


def test_pause_reason_falls_back_to_the_nice_status(client):
    responses.add(responses.GET, PAUSE_INFO_URL, status=404, json={"code": "ClientError.NotFound", "message": "no"})
    reason = _transfers.pause_reason(client, {"task_id": TASK, "is_paused": True, "nice_status": "PAUSED_BY_ADMIN"})
    assert reason == "PAUSED_BY_ADMIN"
