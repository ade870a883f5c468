# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Auth grants through the real SDK auth clients, bearer validation and data_access consent."""

from __future__ import annotations

import globus_sdk
import pytest
from emu_support import (CLIENT_ID, CLIENT_SECRET, DST_ID, GUARD_ID, NATIVE_ID, SRC_ID, TRANSFER_RS, make_client,
                         transfer_scope, tree, write)


def token_requests(emulator):
    return emulator.requests("^/v2/oauth2/token$")


def test_client_credentials_grant(emulator):
    auth_client = globus_sdk.ConfidentialAppAuthClient(CLIENT_ID, CLIENT_SECRET)
    tokens = auth_client.oauth2_client_credentials_tokens(requested_scopes=transfer_scope(GUARD_ID))
    transfer_token = tokens.by_resource_server[TRANSFER_RS]
    assert transfer_token["scope"] == transfer_scope(GUARD_ID)
    assert transfer_token["expires_at_seconds"] > 0 and "refresh_token" not in tokens.data

    tc = globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer(transfer_token["access_token"]))
    assert tc.task_list().http_status == 200
    info = auth_client.oauth2_token_introspect(transfer_token["access_token"], include="identity_set")
    assert info["active"] and info["sub"] == CLIENT_ID and info["identity_set"] == [CLIENT_ID]


def test_invalid_client_secret_is_401(emulator):
    bad = globus_sdk.ConfidentialAppAuthClient(CLIENT_ID, "not-the-secret")
    with pytest.raises(globus_sdk.AuthAPIError) as caught:
        bad.oauth2_client_credentials_tokens(requested_scopes=transfer_scope())
    assert caught.value.http_status == 401
    assert caught.value.raw_json["error"] == "invalid_client"

    with pytest.raises(globus_sdk.AuthAPIError) as caught:  # the authorizer asks for a token at once
        make_client(secret="not-the-secret").task_list()
    assert caught.value.http_status == 401


def test_transfer_rejects_bad_and_revoked_tokens(emulator):
    garbage = globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer("not-a-token"))
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        garbage.task_list()
    assert (caught.value.http_status, caught.value.code) == (401, "AuthenticationFailed")

    auth_client = globus_sdk.ConfidentialAppAuthClient(CLIENT_ID, CLIENT_SECRET)
    token = auth_client.oauth2_client_credentials_tokens(requested_scopes=transfer_scope()).by_resource_server[
        TRANSFER_RS]["access_token"]
    tc = globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer(token))
    assert tc.get_submission_id()["value"]
    auth_client.oauth2_revoke_token(token)
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.get_submission_id()
    assert caught.value.http_status == 401

    auth_only = auth_client.oauth2_client_credentials_tokens(requested_scopes="openid").by_resource_server
    assert set(auth_only) == {"auth.globus.org"}
    wrong_audience = globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(auth_only["auth.globus.org"]["access_token"]))
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        wrong_audience.task_list()
    assert caught.value.http_status == 401


def test_authorization_code_grant_with_pkce_and_refresh(emulator, src, dst):
    native = globus_sdk.NativeAppAuthClient(NATIVE_ID)
    native.oauth2_start_flow(requested_scopes=f"openid {transfer_scope(GUARD_ID)}", refresh_tokens=True)
    code = emulator.follow_authorize_url(native.oauth2_get_authorize_url())  # the browser step
    tokens = native.oauth2_exchange_code_for_tokens(code)
    assert set(tokens.by_resource_server) == {TRANSFER_RS, "auth.globus.org"}
    refresh_token = tokens.by_resource_server[TRANSFER_RS]["refresh_token"]

    authorizer = globus_sdk.RefreshTokenAuthorizer(refresh_token, native)
    tc = globus_sdk.TransferClient(authorizer=authorizer)
    write(src, "mine.txt", "user data")
    data = globus_sdk.TransferData(SRC_ID, GUARD_ID)
    data.add_item("/mine.txt", "/mine.txt")
    task_id = tc.submit_transfer(data)["task_id"]
    emulator.wait_idle()
    task = tc.get_task(task_id)
    assert task["status"] == "SUCCEEDED" and task["username"] == "researcher@globusid.org"
    assert tree(emulator.roots["guarded"]) == {"mine.txt"}

    # expired access token: 401, one refresh through the token endpoint, then success
    refreshes_before = len(token_requests(emulator))
    emulator.admin("POST", "/_emulator/tokens/expire", {})
    assert tc.get_task(task_id)["status"] == "SUCCEEDED"
    assert len(token_requests(emulator)) == refreshes_before + 1
    statuses = [e["status"] for e in emulator.requests(f"/task/{task_id}$")]
    assert statuses[-2:] == [401, 200]


def test_authorization_code_with_wrong_verifier_is_rejected(emulator):
    native = globus_sdk.NativeAppAuthClient(NATIVE_ID)
    native.oauth2_start_flow(requested_scopes=transfer_scope())
    code = emulator.follow_authorize_url(native.oauth2_get_authorize_url())
    native.oauth2_start_flow(requested_scopes=transfer_scope())  # a new flow has another verifier
    with pytest.raises(globus_sdk.AuthAPIError) as caught:
        native.oauth2_exchange_code_for_tokens(code)
    assert caught.value.http_status == 400 and caught.value.raw_json["error"] == "invalid_grant"


def test_refresh_token_grant_and_revocation(emulator):
    native = globus_sdk.NativeAppAuthClient(NATIVE_ID)
    native.oauth2_start_flow(requested_scopes=transfer_scope(), refresh_tokens=True)
    # the browser step through the admin API instead of the authorize URL
    code = emulator.authorization_code(NATIVE_ID, transfer_scope(),
                                       code_challenge=native.current_oauth2_flow_manager.challenge)
    refresh_token = native.oauth2_exchange_code_for_tokens(code).by_resource_server[TRANSFER_RS]["refresh_token"]
    renewed = native.oauth2_refresh_token(refresh_token).by_resource_server[TRANSFER_RS]
    tc = globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer(renewed["access_token"]))
    assert tc.task_list().http_status == 200

    native.oauth2_revoke_token(refresh_token)
    with pytest.raises(globus_sdk.AuthAPIError) as caught:
        native.oauth2_refresh_token(refresh_token)
    assert caught.value.http_status == 400 and caught.value.raw_json["error"] == "invalid_grant"


def test_consent_required_for_mapped_collection_without_data_access(emulator, src):
    tc = make_client(consents=())
    expected = [f"urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/{GUARD_ID}"
                "/data_access]"]
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.operation_ls(GUARD_ID, path="/")
    err = caught.value
    assert (err.http_status, err.code) == (403, "ConsentRequired")
    assert err.raw_json["required_scopes"] == expected
    assert err.info.consent_required.required_scopes == expected

    write(src, "x.txt", "x")
    data = globus_sdk.TransferData(SRC_ID, GUARD_ID)
    data.add_item("/x.txt", "/x.txt")
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.submit_transfer(data)
    assert caught.value.code == "ConsentRequired"
    assert emulator.tasks() == []

    # collections that do not require consent, and get_endpoint, work without it
    assert tc.operation_ls(SRC_ID, path="/").http_status == 200
    assert tc.get_endpoint(GUARD_ID)["entity_type"] == "GCSv5_mapped_collection"
    assert make_client(consents=(GUARD_ID,)).operation_ls(GUARD_ID, path="/").http_status == 200
    assert DST_ID  # the guest collection needs no data_access consent
