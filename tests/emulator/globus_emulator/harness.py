# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Start and drive the emulator as a subprocess: the one way tests and the demo use it.

Example::

    emu = EmulatorProcess(config, workdir).start()
    os.environ.update(emu.env)          # before creating globus_sdk clients
    ...
    emu.admin("POST", "/_emulator/faults", {"kind": "http_error", "status": 503, "count": 2})
    emu.wait_idle()
    emu.stop()

Standard library only, so it can be imported where globus_sdk is not installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EmulatorError(RuntimeError):
    """The emulator did not start, or an admin call failed."""


class EmulatorProcess:
    """A ``python -m globus_emulator`` child process bound to a random local port."""

    def __init__(self, config: dict, workdir: str, python: str | None = None, host: str = "127.0.0.1"):
        self.config = config
        self.workdir = os.path.abspath(workdir)
        self.python = python or sys.executable
        self.host = host
        self.port = None
        self.process = None
        self.config_path = os.path.join(self.workdir, "emulator-config.json")
        self.port_file = os.path.join(self.workdir, "emulator.port")
        self.log_path = os.path.join(self.workdir, "emulator.log")
        self._log = None

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 20.0) -> "EmulatorProcess":
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.config_path, "w", encoding="utf-8") as handle:
            json.dump(self.config, handle, indent=2)
        if os.path.exists(self.port_file):
            os.remove(self.port_file)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [self.python, "-m", "globus_emulator", "--config", self.config_path, "--host", self.host,
             "--port", "0", "--port-file", self.port_file],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise EmulatorError(f"emulator exited with {self.process.returncode}; see {self.log_path}:\n"
                                    + self.log_tail())
            if os.path.exists(self.port_file):
                with open(self.port_file, encoding="utf-8") as handle:
                    text = handle.read().strip()
                if text:
                    self.port = int(text)
                    return self
            time.sleep(0.05)
        self.stop()
        raise EmulatorError(f"emulator did not write {self.port_file} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if needed; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log:
            self._log.close()
            self._log = None
        return self.process.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------ addresses

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise EmulatorError("the emulator is not running")
        return f"http://{self.host}:{self.port}/"

    @property
    def env(self) -> dict:
        """Environment a globus_sdk client needs to talk to this emulator (Transfer and Auth)."""
        return {
            "GLOBUS_SDK_SERVICE_URL_TRANSFER": self.base_url,
            "GLOBUS_SDK_SERVICE_URL_AUTH": self.base_url,
        }

    # ------------------------------------------------------------ admin API

    def admin(self, method: str, path: str, body: dict | None = None, timeout: float = 60.0) -> dict:
        """Call ``/_emulator/...`` (``path`` may omit the prefix) and return the JSON reply."""
        if not path.startswith("/_emulator/"):
            path = "/_emulator/" + path.lstrip("/")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url.rstrip("/") + path, data=data, method=method.upper(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            raise EmulatorError(f"{method} {path} -> {err.code}: {err.read().decode(errors='replace')}") from None
        return json.loads(payload) if payload else {}

    def add_fault(self, **rule) -> int:
        return self.admin("POST", "/_emulator/faults", rule)["ids"][0]

    def fault(self, rule_id: int) -> dict:
        """One rule as it stands now (``fired``, and ``held`` for hold rules)."""
        return next(r for r in self.admin("GET", "/_emulator/faults")["rules"] if r["id"] == rule_id)

    def release(self, rule_id: int) -> None:
        """Let go of the requests a ``hold`` rule keeps waiting."""
        self.admin("POST", f"/_emulator/faults/{rule_id}/release")

    def tasks(self) -> list:
        return self.admin("GET", "/_emulator/tasks")["tasks"]

    def task(self, task_id: str) -> dict:
        return self.admin("GET", f"/_emulator/tasks/{task_id}")

    def requests(self, path_regex: str = "") -> list:
        """The request log (non-admin calls): ``method``, ``path``, ``query``, ``status``."""
        query = "?path=" + urllib.parse.quote(path_regex) if path_regex else ""
        return self.admin("GET", "/_emulator/requests" + query)["requests"]

    def reset(self, tokens: bool = False) -> None:
        self.admin("POST", "/_emulator/reset", {"tokens": tokens})

    def configure(self, **settings) -> dict:
        return self.admin("POST", "/_emulator/config", settings)

    def wait_idle(self, timeout: float = 30.0, task_ids=None) -> dict:
        """Block until no task is queued or running; raise if that does not happen in time."""
        result = self.admin("POST", "/_emulator/wait", {"timeout": timeout, "task_ids": list(task_ids or [])},
                            timeout=timeout + 10)
        if not result["idle"]:
            raise EmulatorError(f"tasks still busy after {timeout} s: {result['busy']}")
        return result

    def authorization_code(self, client_id: str, scope: str, code_challenge: str | None = None,
                           user: str | None = None, refresh_tokens: bool = True) -> str:
        """The browser step of an authorization-code flow: returns a code for these scopes."""
        body = {"client_id": client_id, "scope": scope, "code_challenge": code_challenge,
                "refresh_tokens": refresh_tokens, "user": user}
        return self.admin("POST", "/_emulator/auth/code", body)["code"]

    def follow_authorize_url(self, url: str) -> str:
        """GET an SDK authorize URL without following the redirect; return the code in it."""

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(NoRedirect)
        location = None
        try:
            opener.open(url, timeout=30)
        except urllib.error.HTTPError as err:
            if err.code != 302:
                raise EmulatorError(f"authorize failed: {err.code} {err.read().decode(errors='replace')}") from None
            location = err.headers["Location"]
        if location is None:
            raise EmulatorError("authorize did not redirect")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        return query["code"][0]
