# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Contract tests: emulator responses have the shape of recorded service responses.

For every Transfer fixture that globus_sdk.testing ships, a real TransferClient calls the
emulator in the same state the recording was made in (e.g. a SUCCEEDED unlabeled task for
``task_list``) and the two JSON documents must have the same keys (recursively), the same JSON
types and the same DATA_TYPEs.  Calls without shipped fixtures are checked against the
docs-derived files in ``tests/emulator/fixtures``.  Deviations are listed explicitly below, each
with its reason; anything else fails.
"""

from __future__ import annotations

import json
import os
import pkgutil

import globus_sdk
import globus_sdk.testing.data.transfer as shipped_transfer
import pytest
from emu_support import (CLIENT_ID, CLIENT_SECRET, DST_ID, NATIVE_ID, SRC_ID, TRANSFER_RS, transfer,
                         transfer_scope, write)
from globus_sdk.testing import get_response_set

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")

# Newer task-document keys (present in recent GET /task/<id> captures, absent from the 2021
# task_list recording the SDK ships).
NEWER_TASK_KEYS = {"destination_base_path", "destination_local_user", "destination_local_user_status",
                   "source_base_path", "source_local_user", "source_local_user_status", "total_estimated_bytes"}
# successful_transfer fields newer than the SDK's 2021 recording (docs: Successful Transfer Fields).
NEWER_SUCCESSFUL_TRANSFER_KEYS = {"size", "checksum", "checksum_algorithm", "dynamic"}
# GCSv5-era collection fields (docs: endpoint document) missing from the SDK's GCSv4 fixture.
GCS5_ENDPOINT_KEYS = {"department", "keywords", "owner_id", "owner_string", "contact_email", "info_link",
                      "gcs_version", "gcs_manager_url", "https_server", "high_assurance",
                      "authentication_assurance_timeout", "subscription_id"}

OUT_OF_SCOPE = {
    "create_tunnel": "Globus Streams tunnels are not emulated",
    "delete_tunnel": "Globus Streams tunnels are not emulated",
    "get_tunnel": "Globus Streams tunnels are not emulated",
    "get_tunnel_events": "Globus Streams tunnels are not emulated",
    "list_tunnels": "Globus Streams tunnels are not emulated",
    "update_tunnel": "Globus Streams tunnels are not emulated",
    "get_stream_access_point": "Globus Streams access points are not emulated",
    "endpoint_manager_task_list": "the endpoint-manager (collection admin) API is not emulated",
    "set_subscription_admin_verified": "subscription management is not emulated",
    "set_subscription_id": "subscription management is not emulated",
    "update_endpoint": "collection management is not emulated (collections come from the config)",
}


def json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape_problems(real, emulated, path="$", extra_keys=None, type_exceptions=None):
    """List every difference in keys, JSON types and DATA_TYPE values between two documents."""
    extra_keys = extra_keys or {}
    type_exceptions = type_exceptions or {}
    problems = []
    real_t, emu_t = json_type(real), json_type(emulated)
    if path in type_exceptions:
        return problems
    if real_t != emu_t and not (real_t == "number" and emu_t == "integer"):
        return [f"{path}: recorded {real_t}, emulator {emu_t} ({emulated!r})"]
    if real_t == "object":
        missing = set(real) - set(emulated)
        extra = set(emulated) - set(real) - set(extra_keys.get(path, ()))
        problems += [f"{path}.{k}: missing in emulator response" for k in sorted(missing)]
        problems += [f"{path}.{k}: not in the recorded response" for k in sorted(extra)]
        for key in sorted(set(real) & set(emulated)):
            if key == "DATA_TYPE" and real[key] != emulated[key]:
                problems.append(f"{path}.DATA_TYPE: recorded {real[key]!r}, emulator {emulated[key]!r}")
            problems += shape_problems(real[key], emulated[key], f"{path}.{key}", extra_keys, type_exceptions)
    elif real_t == "array" and real:
        if not emulated:
            problems.append(f"{path}: emulator returned an empty list, nothing to compare")
        for index, item in enumerate(emulated):
            problems += shape_problems(real[0], item, f"{path}[]", extra_keys, type_exceptions)
            if index >= 20:
                break
    return problems


def test_shape_checker_reports_every_kind_of_difference():
    real = {"DATA_TYPE": "task", "a": 1, "b": None, "c": [{"x": "s"}], "d": 1.5}
    assert shape_problems(real, {"DATA_TYPE": "task", "a": 2, "b": None, "c": [{"x": "t"}], "d": 2}) == []
    problems = shape_problems(real, {"DATA_TYPE": "tasks", "a": "1", "b": 0, "c": [{"y": "s"}], "e": 1})
    assert "$.DATA_TYPE: recorded 'task', emulator 'tasks'" in problems
    assert "$.a: recorded integer, emulator string ('1')" in problems
    assert "$.b: recorded null, emulator integer (0)" in problems
    assert "$.c[].x: missing in emulator response" in problems and "$.c[].y: not in the recorded response" in problems
    assert "$.d: missing in emulator response" in problems and "$.e: not in the recorded response" in problems
    assert shape_problems({"c": [{"x": 1}]}, {"c": []}) == ["$.c: emulator returned an empty list, nothing to compare"]
    assert shape_problems({"a": True}, {"a": 1}) == ["$.a: recorded boolean, emulator integer (1)"]


def shipped(name, case="default"):
    return get_response_set(f"transfer.{name}").lookup(case)


def local_fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return json.load(handle)


def assert_same_shape(real, emulated, **kwargs):
    problems = shape_problems(real, emulated, **kwargs)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- coverage bookkeeping


SCENARIOS = {}


def scenario(name):
    def register(func):
        SCENARIOS[name] = func
        return func

    return register


# ---------------------------------------------------------------- shipped fixtures


@scenario("get_submission_id")
def _get_submission_id(tc, emulator, src, dst):
    assert_same_shape(shipped("get_submission_id").json, tc.get_submission_id().data)


@scenario("submit_transfer")
def _submit_transfer(tc, emulator, src, dst):
    write(src, "a.txt", "aaaa")
    data = globus_sdk.TransferData(SRC_ID, DST_ID)
    data.add_item("/a.txt", "/a.txt")
    response = tc.submit_transfer(data)
    assert response.http_status == 202
    assert_same_shape(shipped("submit_transfer").json, response.data)
    # the recorded 400 for a submission without items
    failure = shipped("submit_transfer", "failure")
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.submit_transfer(globus_sdk.TransferData(SRC_ID, DST_ID))
    assert caught.value.http_status == failure.status
    assert caught.value.code == failure.json["code"]
    assert_same_shape(failure.json, caught.value.raw_json)


@scenario("submit_delete")
def _submit_delete(tc, emulator, src, dst):
    write(src, "gone.txt", "x")
    data = globus_sdk.DeleteData(SRC_ID)
    data.add_item("/gone.txt")
    response = tc.submit_delete(data)
    assert response.http_status == 202
    assert_same_shape(shipped("submit_delete").json, response.data)


@scenario("task_list")
def _task_list(tc, emulator, src, dst):
    write(src, "a.txt", "aaaa")
    transfer(tc, emulator, [("/a.txt", "/a.txt")])
    response = tc.task_list(limit=1000)
    assert_same_shape(shipped("task_list").json, response.data, extra_keys={"$.DATA[]": NEWER_TASK_KEYS})


@scenario("cancel_task")
def _cancel_task(tc, emulator, src, dst):
    emulator.configure(limits={"max_active_tasks": 0})  # stays queued until canceled
    write(src, "a.txt", "aaaa")
    result = transfer(tc, emulator, [("/a.txt", "/a.txt")], wait=False)
    response = tc.cancel_task(result["task_id"])
    assert response["code"] == "Canceled"
    assert_same_shape(shipped("cancel_task").json, response.data)


@scenario("get_endpoint")
def _get_endpoint(tc, emulator, src, dst):
    assert_same_shape(shipped("get_endpoint").json, tc.get_endpoint(SRC_ID).data,
                      extra_keys={"$": GCS5_ENDPOINT_KEYS},
                      type_exceptions={"$.expire_time": "GCSv5 collections have no activation; null"})


@scenario("operation_mkdir")
def _operation_mkdir(tc, emulator, src, dst):
    assert_same_shape(shipped("operation_mkdir").json, tc.operation_mkdir(DST_ID, "/newdir").data)


@scenario("operation_rename")
def _operation_rename(tc, emulator, src, dst):
    write(dst, "old.txt", "x")
    assert_same_shape(shipped("operation_rename").json, tc.operation_rename(DST_ID, "/old.txt", "/new.txt").data)


@scenario("operation_stat")
def _operation_stat(tc, emulator, src, dst):
    write(src, "file1.txt", "abcd")
    assert_same_shape(shipped("operation_stat").json, tc.operation_stat(SRC_ID, "/file1.txt").data)
    for case, path in (("not_found", "/foo"), ("permission_denied", "/../foo")):
        recorded = shipped("operation_stat", case)
        with pytest.raises(globus_sdk.TransferAPIError) as caught:
            tc.operation_stat(SRC_ID, path)
        assert (caught.value.http_status, caught.value.code) == (recorded.status, recorded.json["code"])
        assert_same_shape(recorded.json, caught.value.raw_json)


@scenario("endpoint_manager_task_successful_transfers")
def _successful_transfers_doc(tc, emulator, src, dst):
    # The admin variant is not emulated, but it documents the very same successful_transfers
    # document the user-facing call returns; check that call against it.
    write(src, "a.txt", "aaaa")
    task = transfer(tc, emulator, [("/a.txt", "/a.txt")])
    emulator.configure(marker_page_size=1)
    write(src, "b.txt", "bbbb")
    task = transfer(tc, emulator, [("/a.txt", "/x/a.txt"), ("/b.txt", "/x/b.txt")])
    page = tc.task_successful_transfers(task["task_id"]).data
    assert page["next_marker"] is not None  # the recording has a next page, so compare one too
    assert_same_shape(shipped("endpoint_manager_task_successful_transfers").json, page,
                      extra_keys={"$.DATA[]": NEWER_SUCCESSFUL_TRANSFER_KEYS})


# ---------------------------------------------------------------- docs-derived fixtures


def test_get_task_succeeded_contract(tc, emulator, src, dst):
    write(src, "d/one.txt", "12345678")
    write(src, "d/two.txt", "abcdefgh")
    write(src, "d/.hidden", "skip me")
    data = globus_sdk.TransferData(SRC_ID, DST_ID, label="nightly replication", sync_level="mtime",
                                   preserve_timestamp=True)
    data.add_item("/d", "/d", recursive=True)
    data.add_filter_rule(".*", method="exclude", type="file")
    task_id = tc.submit_transfer(data)["task_id"]
    emulator.wait_idle()
    assert_same_shape(local_fixture("get_task.json"), tc.get_task(task_id).data)


def test_get_task_queued_and_failed_contract(tc, emulator, src, dst):
    emulator.configure(limits={"max_active_tasks": 0})
    write(src, "a.txt", "aaaa")
    task_id = transfer(tc, emulator, [("/a.txt", "/a.txt")], wait=False)["task_id"]
    assert_same_shape(local_fixture("get_task_queued.json"), tc.get_task(task_id).data)
    tc.cancel_task(task_id)
    assert_same_shape(local_fixture("get_task_failed.json"), tc.get_task(task_id).data)


def test_task_event_list_contract(tc, emulator, src, dst):
    write(src, "a.txt", "x" * 4096)
    task = transfer(tc, emulator, [("/a.txt", "/a.txt")])
    assert_same_shape(local_fixture("task_event_list.json"), tc.task_event_list(task["task_id"], limit=10).data)


def test_task_successful_transfers_contract(tc, emulator, src, dst):
    write(src, "file1.txt", "abcd")
    task = transfer(tc, emulator, [("/file1.txt", "/file1.txt")])
    assert_same_shape(local_fixture("task_successful_transfers.json"),
                      tc.task_successful_transfers(task["task_id"]).data)


def test_task_skipped_errors_contract(tc, emulator, src, dst):
    write(src, "present.txt", "abcd")
    task = transfer(tc, emulator, [("/present.txt", "/present.txt"), ("/no-such-file", "/no-such-file")],
                    skip_source_errors=True)
    assert task["status"] == "SUCCEEDED"
    assert_same_shape(local_fixture("task_skipped_errors.json"), tc.task_skipped_errors(task["task_id"]).data)


def test_operation_ls_contract(tc, emulator, src, dst):
    write(src, "share/godata/file1.txt", "abcd")
    os.makedirs(os.path.join(src, "share", "godata", "subdir"))
    assert_same_shape(local_fixture("operation_ls.json"), tc.operation_ls(SRC_ID, path="/share/godata").data)


# ---------------------------------------------------------------- Auth token responses


def test_auth_token_response_contracts(emulator):
    auth_rs = get_response_set("auth.oauth2_client_credentials_tokens").lookup("default")
    confidential = globus_sdk.ConfidentialAppAuthClient(CLIENT_ID, CLIENT_SECRET)
    tokens = confidential.oauth2_client_credentials_tokens(requested_scopes=transfer_scope())
    assert_same_shape(auth_rs.json, tokens.data)
    assert TRANSFER_RS in tokens.by_resource_server

    native = globus_sdk.NativeAppAuthClient(NATIVE_ID)
    native.oauth2_start_flow(requested_scopes=transfer_scope())
    code = emulator.follow_authorize_url(native.oauth2_get_authorize_url())
    exchanged = native.oauth2_exchange_code_for_tokens(code)
    assert_same_shape(get_response_set("auth.oauth2_exchange_code_for_tokens").lookup("default").json,
                      exchanged.data)

    access = tokens.by_resource_server[TRANSFER_RS]["access_token"]
    introspected = confidential.oauth2_token_introspect(access)
    assert_same_shape(get_response_set("auth.oauth2_token_introspect").lookup("default").json, introspected.data,
                      type_exceptions={"$.name": "client identities have no name",
                                       "$.email": "client identities have no email"})
    revoked = confidential.oauth2_revoke_token(access)
    assert_same_shape(get_response_set("auth.oauth2_revoke_token").lookup("default").json, revoked.data)


# ---------------------------------------------------------------- driving the scenarios


def test_every_shipped_transfer_fixture_is_checked_or_excluded():
    names = {m.name for m in pkgutil.iter_modules(shipped_transfer.__path__) if not m.name.startswith("_")}
    names.discard("v2")  # the v2 package holds TransferClientV2 (streams/bookmarks) fixtures
    assert names, "no shipped fixtures found"
    unaccounted = names - set(SCENARIOS) - set(OUT_OF_SCOPE)
    assert not unaccounted, f"shipped fixtures with no contract scenario: {sorted(unaccounted)}"
    for required in ("submit_transfer", "get_submission_id", "task_list", "cancel_task", "operation_mkdir",
                     "get_endpoint", "submit_delete", "operation_stat"):
        assert required in SCENARIOS


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_shipped_fixture_contract(name, tc, emulator, src, dst):
    SCENARIOS[name](tc, emulator, src, dst)
