# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Behaviour a real Globus client relies on: pause info, label filters, checksums, Auth error codes.

Shapes are checked against the recordings globus_sdk.testing ships where it has one (Auth errors,
successful transfers) and against the docs-derived fixtures otherwise (pause info); values against
what the service does.
"""

from __future__ import annotations

import hashlib

import globus_sdk
import pytest
from emu_support import CLIENT_ID, CLIENT_SECRET, DST_ID, SRC_ID, poll, read, transfer, transfer_scope, write
from globus_sdk.testing.data.auth._common import FORBIDDEN_AUTH_RESPONSE, UNAUTHORIZED_AUTH_RESPONSE
from test_contract import assert_same_shape, local_fixture


def events(task_id, tc, code):
    return [e for e in tc.task_event_list(task_id, limit=1000) if e["code"] == code]


# ---------------------------------------------------------------- pause info


def test_pause_info_names_the_rule_that_paused_the_task(tc, emulator, src):
    write(src, "p/a.txt", "a")
    emulator.add_fault(kind="pause", collection_id=DST_ID, count=1, message="Storage maintenance until 14:00 UTC")
    task_id = transfer(tc, emulator, [("/p", "/p", True)], wait=False)["task_id"]
    poll(lambda: tc.get_task(task_id)["is_paused"])

    info = tc.task_pause_info(task_id).data
    assert_same_shape(local_fixture("task_pause_info.json"), info)
    [rule] = info["pause_rules"]
    assert (rule["endpoint_id"], rule["message"]) == (DST_ID, "Storage maintenance until 14:00 UTC")
    assert rule["endpoint_display_name"] == "Emulated destination" and rule["pause_task_transfer_read"] is True

    emulator.admin("POST", f"/_emulator/tasks/{task_id}/resume")
    emulator.wait_idle()
    assert tc.get_task(task_id)["status"] == "SUCCEEDED"
    assert tc.task_pause_info(task_id)["pause_rules"] == []


def test_pause_info_of_a_running_task_has_no_rules(tc, emulator, src):
    write(src, "a.txt", "a")
    task = transfer(tc, emulator, [("/a.txt", "/a.txt")])
    assert tc.task_pause_info(task["task_id"]).data == {
        "DATA_TYPE": "pause_info_limited", "pause_rules": [], "source_pause_message": None,
        "destination_pause_message": None, "source_pause_message_share": None,
        "destination_pause_message_share": None}


# ---------------------------------------------------------------- label filters


@pytest.fixture
def labelled(tc, emulator, src):
    write(src, "t.txt", "t")
    ids = {}
    for label in ("alpha-1", "Alpha-2", "beta", None):
        ids[label] = transfer(tc, emulator, [("/t.txt", f"/{label}.txt")], label=label)["task_id"]
    return ids


@pytest.mark.parametrize("clause, expected", [
    ("label:!~alpha*", ["beta", None]),
    ("label:!~alpha*,!~beta", [None]),
    ("label:~alpha*,~beta", ["alpha-1", "Alpha-2", "beta"]),
    ("label:~alpha*,!alpha-1", ["Alpha-2"]),
    ("label:~ALPHA-1", ["alpha-1"]),  # ~ ignores case
    ("label:~alp", []),  # and matches the whole label, * being the only wildcard
    ("label:~*ph*", ["alpha-1", "Alpha-2"]),
    ("label:=beta", ["beta"]),
    ("label:alpha-1,beta", ["alpha-1", "beta"]),
    ("label:!beta", ["alpha-1", "Alpha-2", None]),
])
def test_label_filter_values(tc, labelled, clause, expected):
    found = {t["task_id"] for t in tc.task_list(limit=100, filter=clause)}
    assert found == {labelled[label] for label in expected}


def test_label_filter_from_an_sdk_filter_dict(tc, labelled):
    found = {t["task_id"] for t in tc.task_list(limit=100, filter={"label": ["!~alpha*", "!~beta"], "type": ["TRANSFER"]})}
    assert found == {labelled[None]}


# ---------------------------------------------------------------- checksums


def submit_one(tc, emulator, wait=True, **item_fields):
    data = globus_sdk.TransferData(SRC_ID, DST_ID, verify_checksum=item_fields.pop("verify_checksum", True))
    data.add_item("/f.bin", "/f.bin", **item_fields)
    task_id = tc.submit_transfer(data)["task_id"]
    emulator.wait_idle(task_ids=[task_id])
    return tc.get_task(task_id)


def test_external_checksum_mismatch_fails_the_task(tc, emulator, src, dst):
    write(src, "f.bin", b"payload")
    task = submit_one(tc, emulator, external_checksum=hashlib.md5(b"other").hexdigest())
    assert task["status"] == "FAILED" and task["fatal_error"]["code"] == "VERIFY_CHECKSUM"
    assert "Checksum mismatch" in events(task["task_id"], tc, "VERIFY_CHECKSUM")[0]["details"]
    assert list(tc.task_successful_transfers(task["task_id"])) == []


def test_matching_external_checksum_with_its_algorithm_succeeds(tc, emulator, src, dst):
    write(src, "f.bin", b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()
    task = submit_one(tc, emulator, external_checksum=digest, checksum_algorithm="SHA256")
    assert task["status"] == "SUCCEEDED"
    [done] = tc.task_successful_transfers(task["task_id"])
    assert (done["checksum"], done["checksum_algorithm"], done["size"]) == (digest, "SHA256", 7)


def test_unknown_checksum_algorithm_is_rejected(tc, emulator, src):
    write(src, "f.bin", b"payload")
    data = globus_sdk.TransferData(SRC_ID, DST_ID)
    data.add_item("/f.bin", "/f.bin", external_checksum="00", checksum_algorithm="NOPE")
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.submit_transfer(data)
    assert caught.value.http_status == 400 and emulator.tasks() == []


def test_verify_checksum_catches_damaged_copies_and_retries(tc, emulator, src, dst):
    write(src, "f.bin", b"payload")
    emulator.add_fault(kind="corrupt", repeat=2, count=1)
    task = submit_one(tc, emulator)
    assert task["status"] == "SUCCEEDED" and task["faults"] == 2
    assert len(events(task["task_id"], tc, "VERIFY_CHECKSUM")) == 2
    assert read(dst, "f.bin") == b"payload"


def test_verify_checksum_fails_a_file_that_never_copies_intact(tc, emulator, src, dst):
    write(src, "f.bin", b"payload")
    emulator.add_fault(kind="corrupt", repeat=100, count=1)
    task = submit_one(tc, emulator)
    assert task["status"] == "FAILED" and task["fatal_error"]["code"] == "VERIFY_CHECKSUM"
    assert list(tc.task_successful_transfers(task["task_id"])) == []


def test_without_verify_checksum_damage_goes_unnoticed(tc, emulator, src, dst):
    """What the service does too: nothing compares the copy, so the task succeeds."""
    write(src, "f.bin", b"payload")
    emulator.add_fault(kind="corrupt", count=1)
    task = submit_one(tc, emulator, verify_checksum=False)
    assert task["status"] == "SUCCEEDED" and read(dst, "f.bin") != b"payload"
    [done] = tc.task_successful_transfers(task["task_id"])
    assert (done["checksum"], done["checksum_algorithm"], done["size"]) == (None, None, 7)


def test_successful_transfers_carry_size_and_checksum(tc, emulator, src):
    write(src, "d/one.txt", "12345678")
    write(src, "d/two.txt", "abc")
    task = transfer(tc, emulator, [("/d", "/d", True)])
    entries = sorted(tc.task_successful_transfers(task["task_id"]), key=lambda e: e["source_path"])
    assert [(e["source_path"], e["size"], e["checksum"], e["checksum_algorithm"]) for e in entries] == [
        ("/d/one.txt", 8, hashlib.md5(b"12345678").hexdigest(), "MD5"),
        ("/d/two.txt", 3, hashlib.md5(b"abc").hexdigest(), "MD5")]
    assert_same_shape(local_fixture("task_successful_transfers.json"), tc.task_successful_transfers(task["task_id"]).data)


# ---------------------------------------------------------------- Auth errors


def test_auth_errors_carry_the_recorded_errors_list(emulator):
    bad = globus_sdk.ConfidentialAppAuthClient(CLIENT_ID, "not-the-secret")
    with pytest.raises(globus_sdk.AuthAPIError) as caught:
        bad.oauth2_client_credentials_tokens(requested_scopes=transfer_scope())
    assert_same_shape(UNAUTHORIZED_AUTH_RESPONSE.json, caught.value.raw_json)
    assert (caught.value.http_status, caught.value.code) == (401, "INVALID_CLIENT")
    assert caught.value.request_id == caught.value.raw_json["errors"][0]["id"]

    with pytest.raises(globus_sdk.AuthAPIError) as caught:
        globus_sdk.ConfidentialAppAuthClient(CLIENT_ID, CLIENT_SECRET).oauth2_refresh_token("not-a-refresh-token")
    assert_same_shape(FORBIDDEN_AUTH_RESPONSE.json, caught.value.raw_json)
    assert (caught.value.http_status, caught.value.code) == (400, "INVALID_GRANT")
    assert caught.value.messages == ["Invalid refresh token"]
