# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fault injection rules (admin API ``/_emulator/faults``; not part of Globus).

A rule is a flat JSON object.  Matching keys (all optional, all must match):
``collection_id``, ``path_prefix`` (collection path), ``http_path`` (regex searched in the
request path), ``method``.  ``count`` is how many times the rule fires (HTTP responses for
HTTP kinds, tasks for task kinds); omitted means unlimited.

HTTP kinds, answered instead of the real handler:
  ``http_error``        ``status`` (429/500/502/503...), optional ``code``, ``message``,
                        ``retry_after`` (seconds, sent as ``Retry-After``).
  ``consent_required``  403 ConsentRequired for the matched collection.
  ``hold``              keeps the request waiting until ``POST /_emulator/faults/<id>/release``
                        (or ``seconds``, default 60).  ``phase`` ``before`` (default): the held
                        request never reaches the service, its connection is closed unanswered
                        on release (as if it was lost on the way); ``after``: the service handles
                        it at once and only the response is held (as if the reply was lost).
                        ``held`` counts the requests waiting now, so a test knows a client is
                        blocked at that point.

Task kinds, taken when a task first runs and applied by its runner at the first file whose
source or destination path starts with ``path_prefix`` (else before file number
``after_files``, default 0):
  ``slow``      throttle to ``bytes_per_second``.
  ``pause``     PAUSED error event (``message``), ``is_paused`` true, nice_status ``nice_status``
                (default PAUSED), until ``POST /_emulator/tasks/<id>/resume``.
  ``inactive``  status INACTIVE with ``code`` (default NO_CREDENTIALS) until resumed.
  ``fail``      FAILED with ``fatal_error`` {``code``, ``description``}.
  ``corrupt``   the next ``repeat`` (default 1) copies are damaged; with verify_checksum each is
                caught (VERIFY_CHECKSUM error event) and the file copied again, the task failing
                after 5 bad copies of one file; without it the damage stays and the file counts
                as transferred, as the service would count it.
  ``event``     error event ``code`` (ENDPOINT_TOO_BUSY, PERMISSION_DENIED, FILE_NOT_FOUND, ...)
                ``repeat`` times (default 1) ``retry_delay`` seconds apart, counted in
                ``faults``; then the file proceeds, unless ``fatal`` is true (task FAILED), or
                the code is skippable and the task has ``skip_source_errors`` (file skipped).
"""

from __future__ import annotations

import itertools
import re
import threading

HTTP_KINDS = {"http_error", "consent_required", "hold"}
HOLD_PHASES = {"before", "after"}
TASK_KINDS = {"slow", "pause", "inactive", "fail", "event", "corrupt"}
SKIPPABLE_CODES = {"PERMISSION_DENIED", "FILE_NOT_FOUND", "AMBIGUOUS_PATH"}


class FaultRules:
    """Thread-safe store of rules with firing counters."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.releases = {}  # hold rule id -> Event set on release
        self._ids = itertools.count(1)

    def add(self, rule):
        kind = rule.get("kind")
        if kind not in HTTP_KINDS | TASK_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(HTTP_KINDS | TASK_KINDS)}")
        if kind == "http_error" and not isinstance(rule.get("status"), int):
            raise ValueError("http_error needs an integer 'status'")
        if kind == "slow" and not rule.get("bytes_per_second"):
            raise ValueError("slow needs 'bytes_per_second'")
        if kind == "hold" and rule.get("phase", "before") not in HOLD_PHASES:
            raise ValueError(f"hold 'phase' must be one of {sorted(HOLD_PHASES)}")
        if "http_path" in rule:
            re.compile(rule["http_path"])
        stored = dict(rule)
        with self.lock:
            stored["id"] = next(self._ids)
            stored["fired"] = 0
            if kind == "hold":
                stored["held"] = 0
                self.releases[stored["id"]] = threading.Event()
            self.rules.append(stored)
        return stored["id"]

    def clear(self):
        """Drop every rule; requests still held are let go."""
        with self.lock:
            self.rules.clear()
            for released in self.releases.values():
                released.set()
            self.releases.clear()

    def release(self, rule_id):
        """Let go of the requests a hold rule keeps (and any it would catch later)."""
        with self.lock:
            released = self.releases.get(rule_id)
        if released is None:
            raise KeyError(rule_id)
        released.set()

    def hold(self, rule):
        """Block the calling request thread until the rule is released or its time is up."""
        with self.lock:
            released = self.releases.get(rule["id"])
            stored = next((r for r in self.rules if r["id"] == rule["id"]), None)
            if released is None or stored is None:
                return
            stored["held"] += 1
        try:
            released.wait(float(rule.get("seconds", 60)))
        finally:
            with self.lock:
                stored["held"] -= 1

    def snapshot(self):
        with self.lock:
            return [dict(r) for r in self.rules]

    @staticmethod
    def _exhausted(rule):
        return rule.get("count") is not None and rule["fired"] >= rule["count"]

    def take_http(self, method, path, collection_ids, paths):
        """Return (and consume one firing of) the first HTTP rule matching this request."""
        with self.lock:
            for rule in self.rules:
                if rule["kind"] not in HTTP_KINDS or self._exhausted(rule):
                    continue
                if rule.get("method") and rule["method"].upper() != method:
                    continue
                if rule.get("http_path") and not re.search(rule["http_path"], path):
                    continue
                if rule.get("collection_id") and rule["collection_id"].lower() not in collection_ids:
                    continue
                if rule.get("path_prefix") and not any(p.startswith(rule["path_prefix"]) for p in paths):
                    continue
                rule["fired"] += 1
                return dict(rule)
        return None

    def take_task(self, collection_ids, paths):
        """Return the task rules that apply to a task touching these collections and paths."""
        chosen = []
        with self.lock:
            for rule in self.rules:
                if rule["kind"] not in TASK_KINDS or self._exhausted(rule):
                    continue
                if rule.get("collection_id") and rule["collection_id"].lower() not in collection_ids:
                    continue
                if rule.get("path_prefix") and not any(p.startswith(rule["path_prefix"]) for p in paths):
                    continue
                rule["fired"] += 1
                chosen.append(dict(rule))
        return chosen
