# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which refused submissions are dropped for good and which wait for an exactly-once resend."""

from __future__ import annotations

import json

import pytest
import responses
from globus_sdk.testing import load_response

from ansible_collections.scidata.replication.plugins.module_utils import _globus
from ansible_collections.scidata.replication.plugins.module_utils._errors import GlobusError
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state

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
def db(tmp_path):
    database = open_state(str(tmp_path / "state.db"))
    yield database
    database.close()


def document():
    return {"DATA_TYPE": "transfer", "source_endpoint": "src-id", "destination_endpoint": "dst-id", "label": "l",
            "DATA": [{"DATA_TYPE": "transfer_item", "source_path": "a", "destination_path": "/b"}]}


@pytest.mark.parametrize("status, code", [
    (400, "ClientError.BadRequest"), (403, "PermissionDenied"), (404, "ClientError.NotFound"),
    (409, "ClientError.Conflict"),
])
def test_client_errors_drop_the_request_and_settle_its_items(db, client, status, code):
    submission = load_response("transfer.get_submission_id").metadata["submission_id"]
    responses.add(responses.POST, TRANSFER_URL, status=status, json={"code": code, "message": "refused here"})
    settled = []
    result = _globus.submit_exactly_once(db, client, "job1", document(),
                                         on_rejected=lambda d, s, m: settled.append((s, m)))
    assert result["code"] == "Rejected" and result["task_id"] is None and "refused here" in result["error"]
    assert settled == [(submission, result["error"])]
    row = db.query_one("SELECT status, fatal_error FROM globus_tasks WHERE submission_id = ?", (submission,))
    assert row["status"] == "REJECTED" and json.loads(row["fatal_error"])["code"] == code
    assert _globus.unconfirmed_submissions(db, "job1") == []
    assert _globus.resubmit_unconfirmed(db, client, "job1", on_rejected=settled.append) == []


@pytest.mark.parametrize("status, code", [
    (409, "ClientError.Conflict.TooManyPendingJobs"), (503, "ServiceUnavailable"), (401, "AuthenticationFailed"),
])
def test_waiting_errors_keep_the_request_for_the_same_resend(db, client, status, code):
    submission = load_response("transfer.get_submission_id").metadata["submission_id"]
    responses.add(responses.POST, TRANSFER_URL, status=status, json={"code": code, "message": "later"})
    settled = []
    with pytest.raises(GlobusError):
        _globus.submit_exactly_once(db, client, "job1", document(), on_rejected=lambda d, s, m: settled.append(s))
    assert settled == [] and _globus.unconfirmed_submissions(db, "job1") == [submission]
