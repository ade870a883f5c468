# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""globus_login, globus_collection_info and exactly-once submission against the API emulator."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.scidata.replication.plugins.module_utils import _globus
from ansible_collections.scidata.replication.plugins.module_utils._errors import GlobusError
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state
from globus_setup import CONFIDENTIAL, CONSENT, DST, NATIVE, SECRET, SRC, client_env


@pytest.fixture(scope="module", autouse=True)
def dataset(emulator):
    (emulator.root / "src" / "dataset").mkdir(exist_ok=True)
    (emulator.root / "src" / "dataset" / "file.nc").write_bytes(b"x" * 4096)


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()


def info(ansible, emulator, collections, env=None, **args):
    args = dict(args, collections=collections)
    return ansible.run("scidata.replication.globus_collection_info", args,
                       extra_env=env if env is not None else client_env(emulator))


def test_collection_info_reports_ready_collections(ansible, emulator):
    collections = [{"id": SRC, "paths": ["/dataset/"]}, {"id": DST}]
    result, _output = info(ansible, emulator, collections)
    assert result["changed"] is False and not result.get("failed"), result
    src, dst = result["collections"]
    assert src["ready"] and src["display_name"] == "Source" and src["type"] == "GCSv5 mapped collection"
    assert src["paths"] == [{"path": "/dataset/", "listable": True, "error": None}]
    assert dst["ready"] and dst["reasons"] == []
    checked, _output = ansible.run("scidata.replication.globus_collection_info", {"collections": collections},
                                   check=True, extra_env=client_env(emulator))
    assert checked["collections"] == result["collections"]


def test_collection_info_explains_what_is_not_ready(ansible, emulator):
    missing = "0d3a9a3e-0000-4000-8000-00000000dead"
    result, _output = info(ansible, emulator, [{"id": SRC, "paths": ["/no/such/dir"]}, {"id": missing}])
    src, gone = result["collections"]
    assert not src["ready"] and src["paths"][0]["listable"] is False
    assert "/no/such/dir" in src["reasons"][0]
    assert not gone["ready"] and gone["display_name"] is None and gone["reasons"]


def test_consent_required_is_explained_then_satisfied(ansible, emulator):
    result, _output = info(ansible, emulator, [{"id": CONSENT}])
    entry = result["collections"][0]
    assert not entry["ready"]
    assert CONSENT in entry["reasons"][0] and "data_access_collections" in entry["reasons"][0]
    result, _output = info(ansible, emulator, [{"id": CONSENT}], data_access_collections=[CONSENT])
    assert result["collections"][0]["ready"], result


def test_access_token_mode(ansible, emulator):
    import globus_sdk

    os.environ.update(emulator.env)
    try:
        app = globus_sdk.ConfidentialAppAuthClient(CONFIDENTIAL, SECRET)
        token = app.oauth2_client_credentials_tokens(
            requested_scopes=globus_sdk.scopes.TransferScopes.all).by_resource_server[
                "transfer.api.globus.org"]["access_token"]
    finally:
        for name in emulator.env:
            os.environ.pop(name)
    result, output = info(ansible, emulator, [{"id": DST}], env=dict(emulator.env, GLOBUS_ACCESS_TOKEN=token))
    assert result["collections"][0]["ready"]


def test_wrong_secret_fails_clearly_without_echoing_it(ansible, emulator):
    result, output = ansible.run("scidata.replication.globus_collection_info",
                                 {"collections": [{"id": DST}], "client_secret": "wrong-secret-value-99"},
                                 extra_env=dict(emulator.env, GLOBUS_CLIENT_ID=CONFIDENTIAL), verbosity=3)
    assert result["failed"]
    assert "401" in json.dumps(result) or "unauthorized" in result["msg"].lower() or "invalid" in result["msg"].lower()
    assert "wrong-secret-value-99" not in output
    assert SECRET not in output


def test_429_and_5xx_are_retried_then_a_longer_burst_fails_clearly(ansible, emulator):
    emulator.add_fault(kind="http_error", status=429, count=1, http_path="/v0.10/endpoint/", retry_after=1)
    emulator.add_fault(kind="http_error", status=503, count=1, http_path="/v0.10/endpoint/", retry_after=0)
    result, _output = info(ansible, emulator, [{"id": DST}])
    assert result["collections"][0]["ready"], result
    fired = emulator.admin("GET", "/_emulator/faults")
    assert sum(rule["fired"] for rule in fired["rules"]) == 2, fired
    emulator.add_fault(kind="http_error", status=502, count=10, http_path="/v0.10/endpoint/")
    result, _output = info(ansible, emulator, [{"id": DST}], max_retries=1)
    entry = result["collections"][0]
    assert not entry["ready"] and "502" in entry["reasons"][0]


def test_native_login_then_refresh_token_mode_then_logout(ansible, emulator, tmp_path):
    token_file = str(tmp_path / "globus" / "tokens.json")
    args = {"client_id": NATIVE, "token_file": token_file}
    first, _output = ansible.run("scidata.replication.globus_login", args, extra_env=emulator.env)
    assert first["changed"] is False and first["logged_in"] is False, first
    assert first["authorize_url"].startswith(emulator.base_url)
    assert not os.path.exists(token_file)
    again, _output = ansible.run("scidata.replication.globus_login", args, extra_env=emulator.env)
    assert again["authorize_url"] == first["authorize_url"]

    code = emulator.follow_authorize_url(first["authorize_url"])
    checked, _output = ansible.run("scidata.replication.globus_login", dict(args, auth_code=code), check=True,
                                   extra_env=emulator.env)
    assert checked["changed"] and not os.path.exists(token_file)
    logged, output = ansible.run("scidata.replication.globus_login", dict(args, auth_code=code),
                                 extra_env=emulator.env, verbosity=3)
    assert logged["changed"] and logged["logged_in"], logged
    assert code not in output
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(token_file)).st_mode) == 0o700
    assert "refresh_token" in open(token_file).read()
    unchanged, _output = ansible.run("scidata.replication.globus_login", args, extra_env=emulator.env)
    assert unchanged["changed"] is False and unchanged["logged_in"] is True

    result, _output = info(ansible, emulator, [{"id": SRC}], env=emulator.env, auth_mode="refresh_token",
                           client_id=NATIVE, token_file=token_file)
    assert result["collections"][0]["ready"], result

    planned, _output = ansible.run("scidata.replication.globus_login", dict(args, state="absent"), check=True,
                                   extra_env=emulator.env)
    assert planned["changed"] and os.path.exists(token_file)
    removed, _output = ansible.run("scidata.replication.globus_login", dict(args, state="absent"),
                                   extra_env=emulator.env)
    assert removed["changed"] and not os.path.exists(token_file)
    gone, _output = ansible.run("scidata.replication.globus_login", dict(args, state="absent"),
                                extra_env=emulator.env)
    assert gone["changed"] is False


@pytest.fixture
def transfer_client(emulator, monkeypatch):
    for name, value in emulator.env.items():
        monkeypatch.setenv(name, value)
    return _globus.transfer_client({"client_id": CONFIDENTIAL, "client_secret": SECRET, "max_retries": 1})


def request_document(label):
    return {"DATA_TYPE": "transfer", "source_endpoint": SRC, "destination_endpoint": DST, "label": label,
            "sync_level": "checksum",
            "DATA": [{"DATA_TYPE": "transfer_item", "source_path": "/dataset/", "destination_path": "/dataset/",
                      "recursive": True}]}


def test_crash_before_the_post_then_rerun_creates_one_task(emulator, transfer_client, tmp_path):
    db = open_state(str(tmp_path / "state.db"))
    emulator.add_fault(kind="http_error", status=503, count=10, http_path="^/v0.10/transfer$")
    with pytest.raises(GlobusError):
        _globus.submit_exactly_once(db, transfer_client, "job", request_document("crash-before"))
    assert emulator.tasks() == []
    assert len(_globus.unconfirmed_submissions(db, "job")) == 1
    emulator.reset()
    results = _globus.resubmit_unconfirmed(db, transfer_client, "job")
    assert [r["code"] for r in results] == ["Accepted"]
    emulator.wait_idle()
    assert len(emulator.tasks()) == 1
    assert (emulator.root / "dst" / "dataset" / "file.nc").read_bytes() == b"x" * 4096
    db.close()


def test_crash_after_the_post_then_rerun_gets_the_same_task(emulator, transfer_client, tmp_path):
    db = open_state(str(tmp_path / "state.db"))
    submission = _globus.persist_submission(db, transfer_client, "job", request_document("crash-after"))
    posted = _globus.post_submission(db, transfer_client, submission)
    # What a crash between the POST and recording its answer leaves in the database:
    db.execute("UPDATE globus_tasks SET task_id = NULL, status = 'UNSUBMITTED' WHERE submission_id = ?",
               (submission,))
    results = _globus.resubmit_unconfirmed(db, transfer_client, "job")
    assert [(r["code"], r["task_id"]) for r in results] == [("Duplicate", posted["task_id"])]
    assert len(emulator.tasks()) == 1
    assert db.scalar("SELECT task_id FROM globus_tasks WHERE submission_id = ?", (submission,)) == posted["task_id"]
    emulator.wait_idle()
    db.close()
