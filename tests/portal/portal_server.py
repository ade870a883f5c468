# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""Stand-in for the facility portal API, for tests only (standard library only).

Implements the two calls the collection makes: the password-grant login
``POST /api/v1/oauth/token`` and ``GET /api/v1/equipment/{id}/visits``, with expiring
access tokens and ``{"meta": {"error_message": ...}}`` error bodies. Admin calls under
``/_portal/`` let tests expire tokens, replace visits and read the request log (with
secrets redacted). Run it as a program (see ``main``) or use ``PortalServer`` in-process.

Configuration (JSON)::

    {"clients": [{"client_name": "c", "client_password": "cp"}],
     "users": [{"username": "u", "password": "p"}],
     "equipment": {"101": {"visits": [...], "users": ["u"]}},
     "token_lifetime_seconds": 3600}

``users`` under an equipment entry is optional and limits which users may read it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import json
import os
import secrets
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

REDACTED = "REDACTED"
_SECRET_FIELDS = ("access_token", "password")


def _parse_time(value):
    """Parse ISO 8601; "Z" and missing offsets are read as UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


class PortalState:
    """Clients, users, equipment visits, issued tokens and the request log."""

    def __init__(self, config):
        self._lock = threading.Lock()
        self.clients = {c["client_name"]: c["client_password"] for c in config.get("clients", [])}
        self.users = {u["username"]: u["password"] for u in config.get("users", [])}
        self.equipment = {}
        for equipment_id, entry in config.get("equipment", {}).items():
            self.equipment[str(equipment_id)] = {
                "visits": list(entry.get("visits", [])),
                "users": entry.get("users"),
            }
        self.token_lifetime = float(config.get("token_lifetime_seconds", 3600))
        self._tokens = {}
        self._requests = []
        self._faults = []

    def issue_token(self, username):
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = {"username": username, "expires": time.monotonic() + self.token_lifetime}
        return token

    def token_user(self, token):
        """Return ``(username, None)`` for a live token or ``(None, error message)``."""
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None:
            return None, "The access token provided is invalid."
        if time.monotonic() >= entry["expires"]:
            return None, "The access token provided has expired."
        return entry["username"], None

    def issued_tokens(self):
        """Return every token issued so far, so tests can check none of them leaks."""
        with self._lock:
            return list(self._tokens)

    def expire_tokens(self):
        """Expire every token issued so far; return how many there were."""
        with self._lock:
            for entry in self._tokens.values():
                entry["expires"] = 0.0
            return len(self._tokens)

    def set_visits(self, equipment_id, visits):
        with self._lock:
            entry = self.equipment.setdefault(str(equipment_id), {"visits": [], "users": None})
            entry["visits"] = list(visits)

    def visits(self, equipment_id, start, end):
        """Return the visits overlapping ``start``..``end``, plus any with unreadable times.

        Unreadable visits are passed through so tests can check how clients handle them.
        """
        with self._lock:
            visits = list(self.equipment[equipment_id]["visits"])
        selected = []
        for visit in visits:
            try:
                overlaps = _parse_time(visit["end_time"]) > start and _parse_time(visit["start_time"]) < end
            except (KeyError, TypeError, ValueError, AttributeError):
                overlaps = True
            if overlaps:
                selected.append(visit)
        return selected

    def add_fault(self, status, body=None, count=1, path_prefix="/api/"):
        """Answer the next ``count`` API requests under ``path_prefix`` with ``status`` and ``body``
        (JSON, or raw text when a str); ``count`` None means until cleared."""
        with self._lock:
            self._faults.append({"status": int(status), "body": body, "count": count, "path_prefix": path_prefix})

    def clear_faults(self):
        with self._lock:
            self._faults = []

    def take_fault(self, path):
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault["path_prefix"]) and (fault["count"] is None or fault["count"] > 0):
                    if fault["count"] is not None:
                        fault["count"] -= 1
                    return fault
        return None

    def log_request(self, record):
        with self._lock:
            self._requests.append(record)

    def requests(self):
        with self._lock:
            return [dict(record) for record in self._requests]


class _Handler(BaseHTTPRequestHandler):
    server_version = "PortalTestServer/1"
    # Keep a stuck client from holding a worker thread forever.
    timeout = 10

    def setup(self):
        self._record = None  # the API call being answered, logged by _send_json
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        """Silence the default stderr access log; ``/_portal/requests`` has the log."""

    @property
    def state(self):
        return self.server.state

    def _send_json(self, status, payload):
        self._send_raw(status, json.dumps(payload).encode("utf-8"))
        return status

    def _send_raw(self, status, body):
        record = self._record
        if record is not None:
            # Logged before the client can read the answer, so the log keeps the order of the calls.
            record["status"] = status
            self.state.log_request(record)
            self._record = None
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status, message):
        return self._send_json(status, {"meta": {"code": status, "error_message": message}})

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _basic_auth(self):
        """Return ``(client_name, client_password)`` from the Authorization header."""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None, None
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        name, _sep, password = decoded.partition(":")
        return name, password

    def _dispatch(self, method):
        parts = urlsplit(self.path)
        body = self._read_body()
        if parts.path.startswith("/_portal/"):
            self._admin(method, parts.path, body)
            return
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        record = {
            "method": method,
            "path": parts.path,
            "query": {k: (REDACTED if k in _SECRET_FIELDS else v) for k, v in query.items()},
        }
        segments = parts.path.strip("/").split("/")
        self._record = record
        fault = self.state.take_fault(parts.path)
        if fault is not None:
            record["fault"] = fault["status"]
            if isinstance(fault["body"], str):
                self._send_raw(fault["status"], fault["body"].encode("utf-8"))
            else:
                self._send_json(fault["status"], fault["body"] if fault["body"] is not None else {})
        elif method == "POST" and parts.path == "/api/v1/oauth/token":
            self._token(body, record)
        elif method == "GET" and len(segments) == 5 and segments[:3] == ["api", "v1", "equipment"] and segments[4] == "visits":
            self._visits(unquote(segments[3]), query)
        else:
            self._error(404, "Not found.")

    def _token(self, body, record):
        client_name, client_password = self._basic_auth()
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        record["client_name"] = client_name
        record["form"] = {k: (REDACTED if k in _SECRET_FIELDS else v) for k, v in form.items()}
        if client_name is None or self.state.clients.get(client_name) != client_password:
            return self._error(401, "Client authentication failed.")
        if form.get("grant_type") != "password":
            return self._error(400, "The authorization grant type is not supported.")
        username = form.get("username")
        if username not in self.state.users or self.state.users[username] != form.get("password"):
            return self._error(401, "The user credentials were incorrect.")
        token = self.state.issue_token(username)
        return self._send_json(200, {
            "data": {"access_token": token, "token_type": "Bearer", "expires_in": int(self.state.token_lifetime)},
        })

    def _visits(self, equipment_id, query):
        username, problem = self.state.token_user(query.get("access_token", ""))
        if username is None:
            return self._error(401, problem)
        entry = self.state.equipment.get(equipment_id)
        if entry is None:
            return self._error(404, "Equipment %s not found." % equipment_id)
        if entry["users"] is not None and username not in entry["users"]:
            return self._error(403, "Not allowed to view equipment %s." % equipment_id)
        try:
            start = _parse_time(query["start_time"])
            end = _parse_time(query["end_time"])
        except (KeyError, ValueError):
            return self._error(400, "start_time and end_time must be ISO 8601 times.")
        return self._send_json(200, {"data": {"visits": self.state.visits(equipment_id, start, end)}})

    def _admin(self, method, path, body):
        if method == "POST" and path == "/_portal/expire_tokens":
            self._send_json(200, {"expired": self.state.expire_tokens()})
        elif method == "POST" and path == "/_portal/visits":
            try:
                payload = json.loads(body)
                self.state.set_visits(payload["equipment_id"], payload["visits"])
            except (ValueError, KeyError, TypeError):
                self._error(400, 'Body must be {"equipment_id": ..., "visits": [...]}.')
                return
            self._send_json(200, {"equipment_id": str(payload["equipment_id"]), "visits": len(payload["visits"])})
        elif method == "GET" and path == "/_portal/requests":
            self._send_json(200, {"requests": self.state.requests()})
        elif method == "POST" and path == "/_portal/faults":
            try:
                payload = json.loads(body)
                self.state.add_fault(payload["status"], payload.get("body"), payload.get("count", 1),
                                     payload.get("path_prefix", "/api/"))
            except (ValueError, KeyError, TypeError):
                self._error(400, 'Body must be {"status": ..., "body": ..., "count": ..., "path_prefix": ...}.')
                return
            self._send_json(200, {"faults": "added"})
        else:
            self._error(404, "Not found.")

    def do_GET(self):  # pylint: disable=invalid-name
        self._dispatch("GET")

    def do_POST(self):  # pylint: disable=invalid-name
        self._dispatch("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, state, ssl_context=None):
        self.state = state
        self.ssl_context = ssl_context
        super().__init__(address, _Handler)

    def get_request(self):
        sock, address = super().get_request()
        if self.ssl_context is not None:
            # The handshake runs in the worker thread (_Handler.setup), not the accept loop.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request, client_address):
        """Failed TLS handshakes are expected in tests; report anything else."""
        if not isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
            super().handle_error(request, client_address)


def _ssl_context(certfile, keyfile):
    if certfile is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return context


class PortalServer:
    """The portal on a background thread, for pytest: ``with PortalServer(config) as portal``."""

    def __init__(self, config, host="127.0.0.1", port=0, certfile=None, keyfile=None):
        self.state = PortalState(config)
        self._server = _Server((host, port), self.state, _ssl_context(certfile, keyfile))
        self._scheme = "https" if certfile else "http"
        self._thread = None

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def base_url(self):
        return "%s://%s:%d" % (self._scheme, self._server.server_address[0], self.port)

    def start(self):
        # A short poll interval keeps stop(), and so each test's teardown, quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="portal-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self):
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def _write_port_file(path, port):
    """Write the port so a reader never sees a partial file."""
    temporary = "%s.%d.tmp" % (path, os.getpid())
    with open(temporary, "w", encoding="ascii") as handle:
        handle.write("%d\n" % port)
    os.replace(temporary, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Facility portal stand-in for tests.")
    parser.add_argument("--config", required=True, help="JSON configuration file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the listening port here once bound")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="private key for --tls-cert (PEM)")
    args = parser.parse_args(argv)

    with open(args.config, encoding="utf-8") as handle:
        config = json.load(handle)
    server = _Server((args.host, args.port), PortalState(config), _ssl_context(args.tls_cert, args.tls_key))

    def stop(_signum, _frame):
        # shutdown() waits for serve_forever() to return, so it cannot run on this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        _write_port_file(args.port_file, server.server_address[1])
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if args.port_file and os.path.exists(args.port_file):
            os.unlink(args.port_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
