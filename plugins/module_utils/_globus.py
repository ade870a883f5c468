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
import hashlib
import json
import os
import secrets
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


def token_namespace(data_access_collections=()):
    """Tokens consented for other data_access collections are kept apart, so a changed list
    means a new login instead of tokens that lack a consent."""
    if not data_access_collections:
        return TOKEN_NAMESPACE
    digest = hashlib.sha256(" ".join(sorted(data_access_collections)).encode("utf-8")).hexdigest()
    return "%s-%s" % (TOKEN_NAMESPACE, digest[:12])


def token_storage(token_file, data_access_collections=()):
    """globus-sdk's JSON token storage; the file is created 0600 inside a 0700 directory."""
    directory = os.path.dirname(os.path.abspath(token_file))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
    return JSONTokenStorage(token_file, namespace=token_namespace(data_access_collections))


def build_authorizer(settings):
    require_sdk()
    mode = resolve_auth_mode(settings)
    if mode == "access_token":
        return globus_sdk.AccessTokenAuthorizer(settings["access_token"])
    if mode == "client_credentials":
        app = globus_sdk.ConfidentialAppAuthClient(settings["client_id"], settings["client_secret"])
        return globus_sdk.ClientCredentialsAuthorizer(app, transfer_scope(settings.get("data_access_collections") or ()))
    storage = token_storage(settings["token_file"], settings.get("data_access_collections") or ())
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


class NativeLogin(object):
    """The native-app login split across two runs: the authorize URL first, the code exchange next.

    The PKCE verifier must be the same in both runs, so it waits in ``<token_file>.pending``
    (0600) until the code is exchanged.
    """

    def __init__(self, client_id, token_file, data_access_collections=(), max_retries=5):
        require_sdk()
        self.token_file = token_file
        self.pending_file = token_file + ".pending"
        self.collections = list(data_access_collections)
        self.scope = transfer_scope(self.collections)
        self.scopes = str(self.scope)
        self.client = globus_sdk.NativeAppAuthClient(client_id, app_name=USER_AGENT,
                                                     retry_config=RetryConfig(max_retries=max_retries))

    def _tokens(self):
        if not os.path.exists(self.token_file):
            return None
        return token_storage(self.token_file, self.collections).get_token_data(
            globus_sdk.TransferClient.resource_server)

    def has_tokens(self):
        tokens = self._tokens()
        return bool(tokens and tokens.refresh_token)

    def _start_flow(self, verifier):
        self.client.oauth2_start_flow(requested_scopes=self.scope, refresh_tokens=True, verifier=verifier)

    def _pending_verifier(self):
        if not os.path.exists(self.pending_file):
            return None
        with open(self.pending_file) as handle:
            pending = json.load(handle)
        return pending["verifier"] if pending.get("scopes") == self.scopes else None

    def authorize_url(self, persist=True):
        """The login URL; repeated runs return the same URL until the code is exchanged.

        Without ``persist`` nothing is written: the URL of a login already waiting, else None
        (a URL whose verifier is not kept could never be completed)."""
        verifier = self._pending_verifier()
        if verifier is None and not persist:
            return None
        if verifier is None:
            verifier = secrets.token_urlsafe(64)
            directory = os.path.dirname(os.path.abspath(self.pending_file))
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o700)
            descriptor = os.open(self.pending_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                json.dump(dict(verifier=verifier, scopes=self.scopes), handle)
        self._start_flow(verifier)
        return self.client.oauth2_get_authorize_url()

    def exchange(self, auth_code):
        verifier = self._pending_verifier()
        if verifier is None:
            raise ConfigError("no login is waiting for a code: run without auth_code first to get the authorize_url")
        self._start_flow(verifier)
        with api_errors("exchange the authorization code"):
            tokens = self.client.oauth2_exchange_code_for_tokens(auth_code.strip())
        token_storage(self.token_file, self.collections).store_token_response(tokens)
        os.chmod(self.token_file, 0o600)
        os.unlink(self.pending_file)

    def logout(self):
        """Revoke every stored token, then remove the file."""
        storage = token_storage(self.token_file, self.collections)
        with api_errors("revoke tokens"):
            for tokens in storage.get_token_data_by_resource_server().values():
                for token in (tokens.refresh_token, tokens.access_token):
                    if token:
                        self.client.oauth2_revoke_token(token)
        os.unlink(self.token_file)


# -- collections ---------------------------------------------------------------------------
ENTITY_TYPES = {
    "GCSv5_mapped_collection": "GCSv5 mapped collection",
    "GCSv5_guest_collection": "GCSv5 guest collection",
    "GCSv5_endpoint": "GCSv5 endpoint",
    "GCP_mapped_collection": "GCP mapped collection",
    "GCP_guest_collection": "GCP guest collection",
    "GCSv4_host": "GCSv4 endpoint",
    "GCSv4_share": "GCSv4 shared endpoint",
}


def _credentials_refused(exc):
    """401, or a 403 other than a missing data_access consent (which says how to add it)."""
    return exc.details.get("http_status") in (401, 403) and not exc.details.get("required_scopes")


def collection_readiness(client, collection_id, paths):
    """Describe one collection and whether a transfer can use it. API errors become reasons,
    except credentials the service refuses (401/403): those raise, since the check exists to
    find them."""
    report = dict(id=collection_id, display_name=None, entity_type=None, type=None, connected=None, paused=None,
                  paths=[], ready=False, reasons=[])
    try:
        with api_errors("read collection %s" % collection_id, collection=collection_id):
            endpoint = client.get_endpoint(collection_id)
    except GlobusError as exc:
        if _credentials_refused(exc):
            raise
        report["reasons"].append(exc.msg)
        return report
    entity_type = endpoint.get("entity_type")
    report.update(display_name=endpoint.get("display_name") or endpoint.get("canonical_name"),
                  entity_type=entity_type, type=ENTITY_TYPES.get(entity_type, entity_type))
    if entity_type and entity_type.startswith("GCP_"):
        report.update(connected=bool(endpoint.get("gcp_connected")), paused=bool(endpoint.get("gcp_paused")))
        if not report["connected"]:
            report["reasons"].append("Globus Connect Personal on %s is not connected" % collection_id)
        if report["paused"]:
            report["reasons"].append("Globus Connect Personal on %s is paused" % collection_id)
    if entity_type == "GCSv5_endpoint":
        report["reasons"].append("%s is a Globus Connect Server endpoint, not a collection: use one of its "
                                 "collections" % collection_id)
    for path in paths:
        try:
            with api_errors("list %s on %s" % (path, collection_id), collection=collection_id):
                client.operation_ls(collection_id, path=path, limit=1)
            report["paths"].append(dict(path=path, listable=True, error=None))
        except GlobusError as exc:
            if _credentials_refused(exc):
                raise
            report["paths"].append(dict(path=path, listable=False, error=exc.msg))
            report["reasons"].append(exc.msg)
    report["ready"] = not report["reasons"]
    return report


# -- exactly-once submission ---------------------------------------------------------------
def new_submission_id(client):
    """A fresh submission id from the service (it makes a repeated POST a harmless duplicate)."""
    with api_errors("get a submission id"):
        return client.get_submission_id()["value"]


def persist_submission(db, client, job, document, link=None, kind="transfer", submission_id=None):
    """Get a submission_id and commit it with the request before anything is POSTed.

    ``link(db, submission_id)`` runs in the same transaction, so the items a task carries are
    tied to it atomically. A caller that writes in the same transaction fetches the id first
    (``new_submission_id``), so that no network call runs inside it. Returns the submission_id.
    """
    if submission_id is None:
        submission_id = new_submission_id(client)
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


def is_rejection(error):
    """Whether the service refused the request itself, so resending it can never succeed: a client
    error other than 401 (credentials), 429 (rate) and 409 too-many-pending (wait and resend)."""
    status = error.details.get("http_status")
    if not isinstance(status, int) or not 400 <= status < 500 or status in (401, 429):
        return False
    return not (status == 409 and "TooManyPending" in (error.details.get("code") or ""))


def post_submission(db, client, submission_id, on_rejected=None):
    """POST a persisted request with its stored submission_id and record the task id.

    The service answers ``Accepted`` the first time and ``Duplicate`` (with the original task
    id) for a repeat, so calling this again after a crash never creates a second task.
    Network errors and 5xx keep the request for the same resend. With ``on_rejected``, a request
    the service refuses (``is_rejection``) is never sent again: the row becomes REJECTED with the
    service's message and ``on_rejected(db, submission_id, message)`` runs in the same transaction;
    the result then has ``code`` Rejected and the ``error``.
    """
    row = db.query_one("SELECT kind, request FROM globus_tasks WHERE submission_id = ?", (submission_id,))
    document = json.loads(row["request"])
    document["submission_id"] = submission_id
    try:
        with api_errors("submit %s %s" % (row["kind"], submission_id)):
            if row["kind"] == "delete":
                response = client.submit_delete(document)
            else:
                response = client.submit_transfer(document)
    except GlobusError as exc:
        if on_rejected is None or not is_rejection(exc):
            raise
        now = time.time()
        with db.transaction():
            db.execute("UPDATE globus_tasks SET status = 'REJECTED', fatal_error = ?, updated_at = ? "
                       "WHERE submission_id = ? AND status = 'UNSUBMITTED'",
                       (json.dumps(dict(code=exc.details.get("code"), description=exc.msg)), now, submission_id))
            on_rejected(db, submission_id, exc.msg)
        return dict(submission_id=submission_id, task_id=None, code="Rejected", error=exc.msg)
    now = time.time()
    db.execute(
        "UPDATE globus_tasks SET task_id = ?, status = 'ACTIVE', submitted_at = ?, updated_at = ? "
        "WHERE submission_id = ? AND task_id IS NULL",
        (response["task_id"], now, now, submission_id),
    )
    return dict(submission_id=submission_id, task_id=response["task_id"], code=response["code"])


def submit_exactly_once(db, client, job, document, link=None, kind="transfer", on_rejected=None):
    """Persist, then POST: the one way any module submits a Globus task."""
    submission_id = persist_submission(db, client, job, document, link=link, kind=kind)
    return post_submission(db, client, submission_id, on_rejected=on_rejected)


def resubmit_unconfirmed(db, client, job, on_rejected=None):
    """Re-POST what an earlier run persisted but never saw accepted; returns their results."""
    rows = db.query("SELECT submission_id FROM globus_tasks WHERE job = ? AND status = 'UNSUBMITTED' ORDER BY id",
                    (job,))
    return [post_submission(db, client, row["submission_id"], on_rejected=on_rejected) for row in rows]


def unconfirmed_submissions(db, job):
    """Submission ids persisted but not yet confirmed, for check mode's report."""
    return [row["submission_id"] for row in db.query(
        "SELECT submission_id FROM globus_tasks WHERE job = ? AND status = 'UNSUBMITTED' ORDER BY id", (job,))]
