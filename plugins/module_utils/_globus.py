# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""The one Globus layer: authentication, the Transfer client, error mapping, exactly-once submit.

The SDK reads ``GLOBUS_SDK_ENVIRONMENT`` and ``GLOBUS_SDK_SERVICE_URL_TRANSFER`` /
``GLOBUS_SDK_SERVICE_URL_AUTH`` itself; that is how tests and the demo reach the emulator.
Retries (429 and 5xx with backoff, Retry-After honoured) are the SDK's own ``RetryConfig``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from ansible_collections.scidata.replication.plugins.module_utils._errors import (
    ConfigError,
    GlobusError,
    MissingLibraryError,
)

try:
    import globus_sdk
    from globus_sdk.scopes import GCSCollectionScopes, TransferScopes
    from globus_sdk.token_storage import JSONTokenStorage
    from globus_sdk.transport import RetryConfig

    HAS_GLOBUS_SDK = True
    GLOBUS_SDK_IMPORT_ERROR = None
except ImportError as exc:
    HAS_GLOBUS_SDK = False
    GLOBUS_SDK_IMPORT_ERROR = exc

AUTH_MODES = ("auto", "client_credentials", "refresh_token", "access_token")
TOKEN_NAMESPACE = "scidata-replication"
USER_AGENT = "scidata.replication"


def require_sdk():
    if not HAS_GLOBUS_SDK:
        raise MissingLibraryError("globus_sdk", "'globus-sdk>=4.4.1,<5'", reason="to talk to Globus",
                                  exception=GLOBUS_SDK_IMPORT_ERROR)


def transfer_scope(data_access_collections=()):
    """The Transfer scope, with a data_access dependency per GCSv5 mapped collection that needs it."""
    scope = TransferScopes.all
    for collection_id in data_access_collections:
        scope = scope.with_dependency(GCSCollectionScopes(collection_id).data_access)
    return scope


def resolve_auth_mode(settings):
    """``auto`` picks the first mode whose credentials are present."""
    mode = settings.get("auth_mode") or "auto"
    if mode == "auto":
        if settings.get("access_token"):
            mode = "access_token"
        elif settings.get("client_id") and settings.get("client_secret"):
            mode = "client_credentials"
        elif settings.get("client_id") and settings.get("token_file") and os.path.exists(settings["token_file"]):
            mode = "refresh_token"
        else:
            raise ConfigError(
                "no Globus credentials: set client_id and client_secret (or GLOBUS_CLIENT_ID and "
                "GLOBUS_CLIENT_SECRET) for a confidential app, access_token (GLOBUS_ACCESS_TOKEN), or "
                "client_id plus a token_file written by scidata.replication.globus_login"
            )
    required = {"client_credentials": ("client_id", "client_secret"), "refresh_token": ("client_id", "token_file"),
                "access_token": ("access_token",)}[mode]
    missing = [name for name in required if not settings.get(name)]
    if missing:
        raise ConfigError("auth_mode %s needs %s" % (mode, " and ".join(missing)))
    return mode


def token_storage(token_file):
    """globus-sdk's JSON token storage; the file is created 0600 inside a 0700 directory."""
    directory = os.path.dirname(os.path.abspath(token_file))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
    return JSONTokenStorage(token_file, namespace=TOKEN_NAMESPACE)


def build_authorizer(settings):
    require_sdk()
    mode = resolve_auth_mode(settings)
    if mode == "access_token":
        return globus_sdk.AccessTokenAuthorizer(settings["access_token"])
    if mode == "client_credentials":
        app = globus_sdk.ConfidentialAppAuthClient(settings["client_id"], settings["client_secret"])
        return globus_sdk.ClientCredentialsAuthorizer(app, transfer_scope(settings.get("data_access_collections") or ()))
    storage = token_storage(settings["token_file"])
    tokens = storage.get_token_data(globus_sdk.TransferClient.resource_server)
    if tokens is None or not tokens.refresh_token:
        raise ConfigError("the token file %s holds no Transfer refresh token; log in with "
                          "scidata.replication.globus_login first" % settings["token_file"])
    return globus_sdk.RefreshTokenAuthorizer(
        tokens.refresh_token,
        globus_sdk.NativeAppAuthClient(settings["client_id"]),
        access_token=tokens.access_token,
        expires_at=tokens.expires_at_seconds,
        on_refresh=storage.store_token_response,
    )


def transfer_client(settings):
    """An authenticated ``TransferClient`` with the SDK's retry policy capped at ``max_retries``."""
    require_sdk()
    with api_errors("authenticate"):
        authorizer = build_authorizer(settings)
        client = globus_sdk.TransferClient(
            authorizer=authorizer,
            app_name=USER_AGENT,
            retry_config=RetryConfig(max_retries=settings.get("max_retries", 5)),
        )
    return client


@contextlib.contextmanager
def api_errors(action, collection=None):
    """Turn SDK errors into ``GlobusError`` with code, HTTP status and request id."""
    try:
        yield
    except globus_sdk.GlobusAPIError as exc:
        details = dict(code=exc.code, http_status=exc.http_status, request_id=getattr(exc, "request_id", None))
        consent = getattr(getattr(exc, "info", None), "consent_required", None)
        if consent and consent.required_scopes:
            where = "collection %s" % collection if collection else "a collection"
            raise GlobusError(
                "%s: %s needs data_access consent. Add its id to data_access_collections and log in again "
                "(scidata.replication.globus_login) or grant the consent to the client app. Required scopes: %s"
                % (action, where, " ".join(consent.required_scopes)),
                required_scopes=consent.required_scopes, **details)
        raise GlobusError("%s failed: %s %s: %s" % (action, exc.http_status, exc.code, exc.message), **details)
    except globus_sdk.NetworkError as exc:
        raise GlobusError("%s failed: cannot reach Globus: %s" % (action, exc), code="NetworkError")
    except globus_sdk.GlobusSDKUsageError as exc:
        raise ConfigError("%s: %s" % (action, exc))


# -- exactly-once submission ---------------------------------------------------------------
def persist_submission(db, client, job, document, link=None, kind="transfer"):
    """Get a submission_id and commit it with the request before anything is POSTed.

    ``link(db, submission_id)`` runs in the same transaction, so the items a task carries are
    tied to it atomically. Returns the submission_id.
    """
    with api_errors("get a submission id"):
        submission_id = client.get_submission_id()["value"]
    now = time.time()
    with db.transaction():
        db.execute(
            "INSERT INTO globus_tasks (submission_id, job, kind, label, source_endpoint, destination_endpoint, "
            "request, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'UNSUBMITTED', ?, ?)",
            (submission_id, job, kind, document.get("label"), document.get("source_endpoint", document.get("endpoint")),
             document.get("destination_endpoint", document.get("endpoint")), json.dumps(dict(document)), now, now),
        )
        if link is not None:
            link(db, submission_id)
    return submission_id


def post_submission(db, client, submission_id):
    """POST a persisted request with its stored submission_id and record the task id.

    The service answers ``Accepted`` the first time and ``Duplicate`` (with the original task
    id) for a repeat, so calling this again after a crash never creates a second task.
    """
    row = db.query_one("SELECT kind, request FROM globus_tasks WHERE submission_id = ?", (submission_id,))
    document = json.loads(row["request"])
    document["submission_id"] = submission_id
    with api_errors("submit %s %s" % (row["kind"], submission_id)):
        if row["kind"] == "delete":
            response = client.submit_delete(document)
        else:
            response = client.submit_transfer(document)
    now = time.time()
    db.execute(
        "UPDATE globus_tasks SET task_id = ?, status = 'ACTIVE', submitted_at = ?, updated_at = ? "
        "WHERE submission_id = ? AND task_id IS NULL",
        (response["task_id"], now, now, submission_id),
    )
    return dict(submission_id=submission_id, task_id=response["task_id"], code=response["code"])


def submit_exactly_once(db, client, job, document, link=None, kind="transfer"):
    """Persist, then POST: the one way any module submits a Globus task."""
    submission_id = persist_submission(db, client, job, document, link=link, kind=kind)
    return post_submission(db, client, submission_id)


def resubmit_unconfirmed(db, client, job):
    """Re-POST what an earlier run persisted but never saw accepted; returns their results."""
    rows = db.query("SELECT submission_id FROM globus_tasks WHERE job = ? AND status = 'UNSUBMITTED' ORDER BY id",
                    (job,))
    return [post_submission(db, client, row["submission_id"]) for row in rows]


def unconfirmed_submissions(db, job):
    """Submission ids persisted but not yet confirmed, for check mode's report."""
    return [row["submission_id"] for row in db.query(
        "SELECT submission_id FROM globus_tasks WHERE job = ? AND status = 'UNSUBMITTED' ORDER BY id", (job,))]
