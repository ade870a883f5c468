# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTP routing for the three faces of the emulator on one port.

* ``/v0.10/...``   the Transfer API (Bearer token, rate limit, consent, fault injection);
* ``/v2/...``      the Globus Auth token, authorize, revoke and introspect endpoints;
* ``/_emulator/``  the admin API for tests (faults, task control, waiting, reset).

``App.handle`` holds the logic and the ``Handler`` only speaks HTTP/1.1, so responses always
carry Content-Length and the SDK's keep-alive session works.
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import time
import urllib.parse

from . import files
from .util import APIError, OAuthError, now, request_id

log = logging.getLogger("globus_emulator.server")

DEFAULT_FAULT_CODES = {
    429: "ClientError.TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


class Response:
    """One HTTP response; ``status`` None closes the connection without an answer."""

    def __init__(self, status, body=None, headers=None, content_type="application/json"):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.content_type = content_type

    def payload(self):
        if self.body is None:
            return b""
        if isinstance(self.body, (bytes, str)):
            return self.body.encode() if isinstance(self.body, str) else self.body
        return json.dumps(self.body).encode()


class App:
    """Dispatches one parsed request to the Transfer, Auth or admin handlers."""

    def __init__(self, state, worker):
        self.state = state
        self.worker = worker
        self.transfer_routes = [
            ("GET", r"/v0.10/submission_id", self.get_submission_id),
            ("POST", r"/v0.10/transfer", self.submit_transfer),
            ("POST", r"/v0.10/delete", self.submit_delete),
            ("GET", r"/v0.10/task_list", self.task_list),
            ("GET", r"/v0.10/task/(?P<task_id>[^/]+)", self.get_task),
            ("PUT", r"/v0.10/task/(?P<task_id>[^/]+)", self.update_task),
            ("GET", r"/v0.10/task/(?P<task_id>[^/]+)/event_list", self.event_list),
            ("GET", r"/v0.10/task/(?P<task_id>[^/]+)/successful_transfers", self.successful_transfers),
            ("GET", r"/v0.10/task/(?P<task_id>[^/]+)/skipped_errors", self.skipped_errors),
            ("GET", r"/v0.10/task/(?P<task_id>[^/]+)/pause_info", self.pause_info),
            ("POST", r"/v0.10/task/(?P<task_id>[^/]+)/cancel", self.cancel_task),
            ("GET", r"/v0.10/endpoint/(?P<endpoint_id>[^/]+)", self.get_endpoint),
            ("GET", r"/v0.10/operation/endpoint/(?P<endpoint_id>[^/]+)/ls", self.operation_ls),
            ("GET", r"/v0.10/operation/endpoint/(?P<endpoint_id>[^/]+)/stat", self.operation_stat),
            ("POST", r"/v0.10/operation/endpoint/(?P<endpoint_id>[^/]+)/mkdir", self.operation_mkdir),
            ("POST", r"/v0.10/operation/endpoint/(?P<endpoint_id>[^/]+)/rename", self.operation_rename),
        ]
        self.admin_routes = [
            ("GET", r"/_emulator/health", self.admin_health),
            ("GET", r"/_emulator/tasks", self.admin_tasks),
            ("GET", r"/_emulator/tasks/(?P<task_id>[^/]+)", self.admin_task),
            ("POST", r"/_emulator/tasks/(?P<task_id>[^/]+)/resume", self.admin_resume),
            ("POST", r"/_emulator/tasks/(?P<task_id>[^/]+)/pause", self.admin_pause),
            ("GET", r"/_emulator/faults", self.admin_faults),
            ("POST", r"/_emulator/faults", self.admin_add_faults),
            ("DELETE", r"/_emulator/faults", self.admin_clear_faults),
            ("POST", r"/_emulator/faults/(?P<rule_id>[0-9]+)/release", self.admin_release_fault),
            ("POST", r"/_emulator/reset", self.admin_reset),
            ("POST", r"/_emulator/wait", self.admin_wait),
            ("GET", r"/_emulator/config", self.admin_config),
            ("POST", r"/_emulator/config", self.admin_set_config),
            ("POST", r"/_emulator/auth/code", self.admin_auth_code),
            ("POST", r"/_emulator/tokens/expire", self.admin_expire_tokens),
            ("GET", r"/_emulator/requests", self.admin_requests),
        ]

    # ------------------------------------------------------------ dispatch

    def handle(self, method, raw_path, headers, body):
        parsed = urllib.parse.urlsplit(raw_path)
        path = urllib.parse.unquote(parsed.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        started = now()
        try:
            if path.startswith("/_emulator/"):
                response = self.route(self.admin_routes, method, path, query, _json_body(body), None)
            elif path.startswith("/v2/"):
                response = self.handle_auth(method, path, query, headers, body)
            else:
                response = self.handle_transfer(method, path, query, headers, body)
        except APIError as err:
            response = _error_response(err, path)
        except Exception:  # report instead of dropping the connection
            log.exception("unhandled error for %s %s", method, raw_path)
            response = Response(500, {"code": "InternalServerError", "message": "emulator error",
                                      "request_id": request_id(), "resource": _resource(path)})
        if not path.startswith("/_emulator/"):
            with self.state.lock:
                self.state.request_log.append({"time": started, "method": method, "path": path,
                                               "query": query, "status": response.status})
        return response

    @staticmethod
    def route(routes, method, path, query, body, grant):
        allowed = False
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if not match:
                continue
            if verb != method:
                allowed = True
                continue
            result = handler(grant=grant, query=query, body=body, **match.groupdict())
            if isinstance(result, Response):
                return result
            if isinstance(result, tuple):
                return Response(result[0], result[1])
            return Response(200, result)
        if allowed:
            raise APIError(405, "ClientError.MethodNotAllowed", f"{method} is not allowed on {path}")
        raise APIError(404, "ClientError.NotFound", f"No such resource: {path}")

    # ------------------------------------------------------------ Transfer

    def handle_transfer(self, method, path, query, headers, raw_body):
        body = _json_body(raw_body) if method in ("POST", "PUT") else None
        touched, paths = self.touched(path, query, body)

        def answer():
            grant = self.state.auth.validate_bearer(headers.get("Authorization"))
            self.state.check_rate(grant)
            return self.route(self.transfer_routes, method, path, query, body, grant)

        return self.with_faults(method, path, touched, paths, answer)

    def with_faults(self, method, path, touched, paths, answer):
        """``answer()`` the request unless a fault rule answers it instead or holds it."""
        fault = self.state.faults.take_http(method, path, touched, paths)
        if fault and fault["kind"] != "hold":
            return self.fault_response(fault, path, touched)
        if fault and fault.get("phase", "before") == "before":
            self.state.faults.hold(fault)
            return Response(None)
        try:
            response = answer()
        except APIError as err:
            response = _error_response(err, path)
        except OAuthError as err:
            response = Response(err.status, err.body(), err.headers)
        if fault:
            self.state.faults.hold(fault)
        return response

    def touched(self, path, query, body):
        """Collections and collection paths a request touches, for fault matching."""
        ids, paths = set(), []
        match = re.match(r"/v0\.10/(?:operation/)?endpoint/([^/]+)", path)
        if match:
            ids.add(match.group(1).lower())
            for key in ("path",):
                if query.get(key):
                    paths.append(query[key])
        if isinstance(body, dict):
            for key in ("source_endpoint", "destination_endpoint", "endpoint"):
                if isinstance(body.get(key), str):
                    ids.add(body[key].lower())
            for key in ("path", "old_path", "new_path"):
                if isinstance(body.get(key), str):
                    paths.append(body[key])
            for item in body.get("DATA") or []:
                if isinstance(item, dict):
                    paths.extend(v for k, v in item.items() if k.endswith("path") and isinstance(v, str))
        return ids, paths

    def fault_response(self, fault, path, touched):
        if fault["kind"] == "consent_required":
            ids = [fault["collection_id"]] if fault.get("collection_id") else sorted(touched)
            err = self.state.consent_error(ids)
            return Response(err.status, err.body(_resource(path)))
        status = fault["status"]
        headers = {}
        if fault.get("retry_after") is not None:
            headers["Retry-After"] = str(int(fault["retry_after"]))
        elif status in (429, 503):
            headers["Retry-After"] = "1"
        body = {"code": fault.get("code") or DEFAULT_FAULT_CODES.get(status, "ServiceError"),
                "message": fault.get("message") or f"Injected fault (HTTP {status})",
                "request_id": request_id(), "resource": _resource(path)}
        return Response(status, body, headers)

    def get_submission_id(self, grant, **_):
        return self.state.new_submission_id()

    def submit_transfer(self, grant, body, **_):
        return self.state.submit(grant, body, "TRANSFER", "/transfer")

    def submit_delete(self, grant, body, **_):
        return self.state.submit(grant, body, "DELETE", "/delete")

    def task_list(self, grant, query, **_):
        return self.state.task_list(grant, query)

    def get_task(self, grant, task_id, **_):
        task = self.state.visible_task(grant, task_id)
        with self.state.lock:
            return task.doc()

    def update_task(self, grant, task_id, body, **_):
        return self.state.update_task(grant, task_id, body)

    def event_list(self, grant, task_id, query, **_):
        return self.state.event_list(grant, task_id, query)

    def successful_transfers(self, grant, task_id, query, **_):
        return self.state.marker_page(grant, task_id, query, "successful_transfers")

    def skipped_errors(self, grant, task_id, query, **_):
        return self.state.marker_page(grant, task_id, query, "skipped_errors")

    def pause_info(self, grant, task_id, **_):
        task = self.state.visible_task(grant, task_id)
        with self.state.lock:
            return task.pause_info_doc()

    def cancel_task(self, grant, task_id, **_):
        return self.state.cancel(grant, task_id)

    def get_endpoint(self, grant, endpoint_id, **_):
        return self.state.collection(endpoint_id).endpoint_doc()

    def operation_ls(self, grant, endpoint_id, query, **_):
        coll = self.state.collection(endpoint_id)
        self.state.check_consent(grant, [coll])
        return files.ls(coll, query)

    def operation_stat(self, grant, endpoint_id, query, **_):
        coll = self.state.collection(endpoint_id)
        self.state.check_consent(grant, [coll])
        return files.stat(coll, query)

    def operation_mkdir(self, grant, endpoint_id, body, **_):
        coll = self.state.collection(endpoint_id)
        self.state.check_consent(grant, [coll])
        return files.mkdir(coll, body or {})

    def operation_rename(self, grant, endpoint_id, body, **_):
        coll = self.state.collection(endpoint_id)
        self.state.check_consent(grant, [coll])
        return files.rename(coll, body or {})

    # ------------------------------------------------------------ Auth

    def handle_auth(self, method, path, query, headers, raw_body):
        return self.with_faults(method, path, set(), [], lambda: self.answer_auth(method, path, query, headers, raw_body))

    def answer_auth(self, method, path, query, headers, raw_body):
        auth = self.state.auth
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw_body.decode() if raw_body else "").items()}
        if method == "POST" and path == "/v2/oauth2/token":
            return Response(200, auth.token(headers, form))
        if method == "POST" and path == "/v2/oauth2/token/revoke":
            return Response(200, auth.revoke(headers, form))
        if method == "POST" and path == "/v2/oauth2/token/introspect":
            return Response(200, auth.introspect(headers, form))
        if method == "GET" and path == "/v2/oauth2/authorize":
            return Response(302, b"", {"Location": auth.authorize(query)}, content_type="text/plain")
        if method == "GET" and path == "/v2/web/auth-code":
            code = query.get("code", "")
            page = f"<html><body><p>Native App Authorization Code</p><pre id='code'>{code}</pre></body></html>"
            return Response(200, page, content_type="text/html")
        raise OAuthError(404, "not_found", f"No such Auth resource: {path}")

    # ------------------------------------------------------------ admin

    def _task(self, task_id):
        with self.state.lock:
            task = self.state.tasks.get(task_id.lower())
        if task is None:
            raise APIError(404, "ClientError.NotFound", f"No task {task_id}")
        return task

    def admin_health(self, **_):
        return {"ok": True, "collections": sorted(self.state.collections)}

    def admin_tasks(self, **_):
        with self.state.lock:
            return {"tasks": [t.admin_doc() for t in self.state.tasks.values()]}

    def admin_task(self, task_id, **_):
        task = self._task(task_id)
        with self.state.lock:
            return task.admin_doc()

    def admin_resume(self, task_id, **_):
        task = self._task(task_id)
        self.worker.resume(task)
        with self.state.lock:
            return task.admin_doc()

    def admin_pause(self, task_id, body, **_):
        task = self._task(task_id)
        self.worker.pause(task, (body or {}).get("message"))
        with self.state.lock:
            return task.admin_doc()

    def admin_faults(self, **_):
        return {"rules": self.state.faults.snapshot()}

    def admin_add_faults(self, body, **_):
        rules = body.get("rules") if isinstance(body, dict) and "rules" in body else [body]
        try:
            ids = [self.state.faults.add(rule) for rule in rules]
        except (ValueError, re.error, AttributeError) as exc:
            raise APIError(400, "ClientError.BadRequest", f"Invalid fault rule: {exc}") from None
        return {"ids": ids}

    def admin_release_fault(self, rule_id, **_):
        try:
            self.state.faults.release(int(rule_id))
        except KeyError:
            raise APIError(404, "ClientError.NotFound", f"No hold rule {rule_id}") from None
        return {"released": int(rule_id)}

    def admin_clear_faults(self, **_):
        self.state.faults.clear()
        return {"rules": []}

    def admin_reset(self, body, **_):
        state = self.state
        with state.changed:
            for task in state.tasks.values():
                task.discard = True
            state.changed.notify_all()
        deadline = time.monotonic() + 10
        while self.worker.runners and time.monotonic() < deadline:
            time.sleep(0.01)
        with state.changed:
            state.tasks.clear()
            state.submissions.clear()
            state.rate_windows.clear()
            state.request_log.clear()
            state.changed.notify_all()
        state.faults.clear()
        if (body or {}).get("tokens"):
            state.auth.reset()
        return {"reset": True}

    def admin_wait(self, body, **_):
        """Block until no task is queued or running (paused and inactive tasks do not count)."""
        body = body or {}
        timeout = float(body.get("timeout", 30))
        wanted = {t.lower() for t in body.get("task_ids") or []}
        state = self.state
        end = time.monotonic() + timeout
        with state.changed:
            while True:
                busy = [t.task_id for t in state.tasks.values()
                        if t.phase in ("queued", "running") and (not wanted or t.task_id in wanted)]
                if not busy or time.monotonic() >= end:
                    break
                state.changed.wait(min(0.05, max(end - time.monotonic(), 0.001)))
            summary = [{"task_id": t.task_id, "status": t.status, "phase": t.phase}
                       for t in state.tasks.values() if not wanted or t.task_id in wanted]
        return {"idle": not busy, "busy": busy, "tasks": summary}

    def admin_config(self, **_):
        state = self.state
        return {"limits": state.limits.doc(), "transfer_rate_bytes_per_second": state.transfer_rate,
                "progress_interval_seconds": state.progress_interval, "marker_page_size": state.marker_page_size,
                "token_lifetime_seconds": state.auth.token_lifetime}

    def admin_set_config(self, body, **_):
        state = self.state
        body = body or {}
        with state.lock:
            if "limits" in body:
                state.limits.update(body["limits"])
                state.rate_windows.clear()
            if "transfer_rate_bytes_per_second" in body:
                state.transfer_rate = body["transfer_rate_bytes_per_second"]
            if "progress_interval_seconds" in body:
                state.progress_interval = float(body["progress_interval_seconds"])
            if "marker_page_size" in body:
                state.marker_page_size = int(body["marker_page_size"])
            if "token_lifetime_seconds" in body:
                state.auth.token_lifetime = int(body["token_lifetime_seconds"])
            state.changed.notify_all()
        return self.admin_config()

    def admin_auth_code(self, body, **_):
        body = body or {}
        code = self.state.auth.issue_code(
            body.get("client_id", ""), body.get("scope", ""), username=body.get("user"),
            challenge=body.get("code_challenge"), challenge_method=body.get("code_challenge_method", "S256"),
            redirect_uri=body.get("redirect_uri"), offline=bool(body.get("refresh_tokens", True)),
            state=body.get("state"),
        )
        return {"code": code.code, "user": code.identity.username, "identity_id": code.identity.id}

    def admin_expire_tokens(self, body, **_):
        return self.state.auth.expire_tokens((body or {}).get("token"))

    def admin_requests(self, query, **_):
        with self.state.lock:
            log_entries = list(self.state.request_log)
        if query.get("path"):
            log_entries = [e for e in log_entries if re.search(query["path"], e["path"])]
        return {"requests": log_entries}


def _resource(path):
    """Error documents name the resource without the version prefix (``/transfer``)."""
    return path[len("/v0.10"):] if path.startswith("/v0.10/") else path


def _error_response(err, path):
    return Response(err.status, err.body(_resource(path)), err.headers)


def _json_body(raw):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise APIError(400, "ClientError.BadRequest", "Request body is not valid JSON") from None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "globus-emulator"

    def _dispatch(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = self.server.app.handle(method, self.path, self.headers, body)
        if response.status is None:
            self.close_connection = True
            return
        payload = response.payload()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def log_message(self, fmt, *args):
        log.debug("%s - %s", self.address_string(), fmt % args)


class EmulatorHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, app):
        super().__init__(address, Handler)
        self.app = app
