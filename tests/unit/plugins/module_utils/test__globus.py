# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Globus layer against the recorded real responses that globus_sdk.testing ships."""

from __future__ import annotations

import json

import pytest
import requests
import responses
from globus_sdk.testing import get_last_request, load_response

from ansible_collections.scidata.replication.plugins.module_utils import _globus
from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError, GlobusError
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state

COLLECTION = "6b5b4a4e-9e1b-4b8e-a5a4-6e4ab1f1c0de"
TRANSFER_URL = "https://transfer.api.globus.org/v0.10/transfer"


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


@pytest.fixture
def db(state_db_url):
    database = open_state(state_db_url)
    yield database
    database.close()


def document():
    return {"DATA_TYPE": "transfer", "source_endpoint": "src-id", "destination_endpoint": "dst-id",
            "label": "nightly", "DATA": [{"DATA_TYPE": "transfer_item", "source_path": "/a", "destination_path": "/b"}]}


@pytest.mark.parametrize("settings, mode", [
    ({"access_token": "t", "client_id": "c", "client_secret": "s"}, "access_token"),
    ({"client_id": "c", "client_secret": "s"}, "client_credentials"),
    ({"auth_mode": "access_token", "access_token": "t"}, "access_token"),
])
def test_auto_mode_picks_the_credentials_present(settings, mode):
    assert _globus.resolve_auth_mode(settings) == mode


def test_refresh_token_mode_needs_an_existing_token_file(tmp_path):
    token_file = tmp_path / "tokens.json"
    with pytest.raises(ConfigError) as info:
        _globus.resolve_auth_mode({"client_id": "c", "token_file": str(token_file)})
    assert "GLOBUS_CLIENT_ID" in info.value.msg
    token_file.write_text("{}")
    assert _globus.resolve_auth_mode({"client_id": "c", "token_file": str(token_file)}) == "refresh_token"


def test_explicit_mode_names_the_missing_option():
    with pytest.raises(ConfigError) as info:
        _globus.resolve_auth_mode({"auth_mode": "client_credentials", "client_id": "c"})
    assert "client_secret" in info.value.msg


def test_data_access_collections_become_dependent_scopes():
    scope = str(_globus.transfer_scope([COLLECTION]))
    assert scope.startswith("urn:globus:auth:scope:transfer.api.globus.org:all[")
    assert "https://auth.globus.org/scopes/%s/data_access" % COLLECTION in scope


def test_submit_exactly_once_persists_then_records_the_task(db, client):
    submission = load_response("transfer.get_submission_id").metadata["submission_id"]
    task_id = load_response("transfer.submit_transfer").metadata["task_id"]
    linked = []
    result = _globus.submit_exactly_once(db, client, "job1", document(), link=lambda d, s: linked.append(s))
    assert result == {"submission_id": submission, "task_id": task_id, "code": "Accepted"}
    assert linked == [submission]
    sent = json.loads(get_last_request().body)
    assert sent["submission_id"] == submission and sent["label"] == "nightly"
    row = db.query_one("SELECT task_id, status, request FROM globus_tasks WHERE submission_id = ?", (submission,))
    assert row["task_id"] == task_id and row["status"] == "ACTIVE"
    assert json.loads(row["request"])["DATA"][0]["source_path"] == "/a"


def test_failed_post_leaves_the_submission_for_an_identical_resubmit(db, client):
    submission = load_response("transfer.get_submission_id").metadata["submission_id"]
    responses.add(responses.POST, TRANSFER_URL, status=503, json={"code": "ServiceUnavailable", "message": "down"})
    with pytest.raises(GlobusError) as info:
        _globus.submit_exactly_once(db, client, "job1", document())
    assert info.value.details["http_status"] == 503
    assert _globus.unconfirmed_submissions(db, "job1") == [submission]

    responses.reset()
    duplicate = load_response("transfer.submit_transfer").metadata["task_id"]
    results = _globus.resubmit_unconfirmed(db, client, "job1")
    assert [r["task_id"] for r in results] == [duplicate]
    assert json.loads(get_last_request().body)["submission_id"] == submission
    assert _globus.unconfirmed_submissions(db, "job1") == []
    assert db.scalar("SELECT count(*) FROM globus_tasks") == 1


def test_retries_through_429_and_5xx(db):
    client = _globus.transfer_client({"access_token": "test-token", "max_retries": 3})
    client.retry_config.max_sleep = 0
    load_response("transfer.get_submission_id")
    responses.add(responses.POST, TRANSFER_URL, status=429, headers={"Retry-After": "0"}, json={"code": "RateLimit"})
    responses.add(responses.POST, TRANSFER_URL, status=502, json={"code": "BadGateway"})
    load_response("transfer.submit_transfer")
    result = _globus.submit_exactly_once(db, client, "job1", document())
    assert result["code"] == "Accepted"
    assert len([c for c in responses.calls if c.request.url == TRANSFER_URL]) == 3


def test_consent_required_names_the_collection_and_the_fix(client):
    responses.add(responses.GET, "https://transfer.api.globus.org/v0.10/operation/endpoint/%s/ls" % COLLECTION,
                  status=403, json={"code": "ConsentRequired", "message": "Missing required data_access consent",
                                    "request_id": "abc123",
                                    "required_scopes": ["urn:globus:auth:scope:transfer.api.globus.org:all[*"
                                                        "https://auth.globus.org/scopes/%s/data_access]" % COLLECTION]})
    with pytest.raises(GlobusError) as info:
        with _globus.api_errors("list", collection=COLLECTION):
            client.operation_ls(COLLECTION, path="/")
    assert COLLECTION in info.value.msg and "data_access_collections" in info.value.msg
    assert info.value.details["http_status"] == 403 and info.value.details["request_id"] == "abc123"


def test_network_errors_are_globus_errors(client):
    responses.add(responses.GET, "https://transfer.api.globus.org/v0.10/submission_id",
                  body=requests.exceptions.ConnectionError("connection refused"))
    with pytest.raises(GlobusError) as info:
        with _globus.api_errors("get a submission id"):
            client.get_submission_id()
    assert info.value.details["code"] == "NetworkError"
