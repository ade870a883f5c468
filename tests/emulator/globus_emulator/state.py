# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The emulator's shared state and the Transfer API operations that read or change it.

One re-entrant lock guards everything (tasks, submissions, rate windows); the worker's
runner threads take it only for short bookkeeping, never while copying bytes.  A condition
on the same lock wakes the scheduler and ``POST /_emulator/wait``.
"""

from __future__ import annotations

import collections
import math
import threading
import uuid

from . import auth as auth_mod
from .faults import FaultRules
from .model import Collection, Task
from .queries import int_param, order_tasks, task_filters
from .util import CHECKSUM_ALGORITHMS, APIError, is_uuid, now, parse_time, request_id

SYNC_LEVELS = {"exists": 0, "size": 1, "mtime": 2, "checksum": 3}
TASK_LIST_MAX = 1000  # limit cap, and the furthest offset+limit reaches (SDK paginator agrees)


def _bool(doc, key, default=False):
    value = doc.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise APIError(400, "ClientError.BadRequest", f"'{key}' must be a boolean")
    return value


class Limits:
    def __init__(self, cfg):
        cfg = cfg or {}
        self.max_active_tasks = int(cfg.get("max_active_tasks", 3))
        self.max_pending_tasks = int(cfg.get("max_pending_tasks", 100))
        self.requests_per_second = float(cfg.get("requests_per_second", 20))
        self.rate_window_seconds = float(cfg.get("rate_window_seconds", 10))

    def update(self, cfg):
        for key in ("max_active_tasks", "max_pending_tasks"):
            if key in cfg:
                setattr(self, key, int(cfg[key]))
        for key in ("requests_per_second", "rate_window_seconds"):
            if key in cfg:
                setattr(self, key, float(cfg[key]))

    def doc(self):
        return dict(vars(self))


class State:
    """Collections, tasks, submissions, limits, fault rules and the Auth service."""

    def __init__(self, config):
        self.config = config
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.auth = auth_mod.AuthService(config)
        self.faults = FaultRules()
        self.limits = Limits(config.get("limits"))
        self.transfer_rate = config.get("transfer_rate_bytes_per_second")
        self.progress_interval = float(config.get("progress_interval_seconds", 1.0))
        self.marker_page_size = int(config.get("marker_page_size", 1000))
        self.collections = {}
        for cfg in config.get("collections", []):
            coll = Collection(cfg)
            self.collections[coll.id] = coll
        self.tasks = collections.OrderedDict()
        self.submissions = {}
        self.issued_submission_ids = set()
        self.rate_windows = collections.defaultdict(collections.deque)
        self.request_log = collections.deque(maxlen=5000)
        self._seq = 0

    def set_server_address(self, host, port):
        for coll in self.collections.values():
            coll.server_host, coll.server_port = host, port

    def notify(self):
        with self.changed:
            self.changed.notify_all()

    # ------------------------------------------------------------ lookups and checks

    def collection(self, collection_id):
        key = str(collection_id).lower()
        coll = self.collections.get(key)
        if coll is None:
            raise APIError(404, "EndpointNotFound", f"No such endpoint '{collection_id}'")
        return coll

    def check_consent(self, grant, collections_touched):
        """403 ConsentRequired when a mapped collection's data_access consent is missing."""
        missing = [c.id for c in collections_touched if c.requires_consent and c.id not in grant.data_access]
        if missing:
            raise self.consent_error(missing)

    @staticmethod
    def consent_error(collection_ids):
        deps = " ".join("*" + auth_mod.data_access_scope(cid) for cid in collection_ids)
        return APIError(403, "ConsentRequired", "Missing required data_access consent",
                        required_scopes=[f"{auth_mod.TRANSFER_SCOPE}[{deps}]"])

    def check_rate(self, grant):
        """Sliding window per identity: ``requests_per_second`` x ``rate_window_seconds``."""
        with self.lock:
            limits = self.limits
            window = self.rate_windows[grant.identity.id]
            t = now()
            while window and window[0] <= t - limits.rate_window_seconds:
                window.popleft()
            allowed = max(int(limits.requests_per_second * limits.rate_window_seconds), 1)
            if len(window) >= allowed:
                retry_after = max(math.ceil(window[0] + limits.rate_window_seconds - t), 1)
                raise APIError(429, "ClientError.TooManyRequests",
                               f"Rate limit exceeded: more than {limits.requests_per_second:g} requests per second",
                               headers={"Retry-After": str(retry_after)})
            window.append(t)

    def visible_task(self, grant, task_id):
        with self.lock:
            task = self.tasks.get(str(task_id).lower())
            if task is None or task.owner.id != grant.identity.id:
                raise APIError(404, "ClientError.NotFound", f"No task found with id '{task_id}'")
            return task

    # ------------------------------------------------------------ submission

    def new_submission_id(self):
        value = str(uuid.uuid4())
        with self.lock:
            self.issued_submission_ids.add(value)
        return {"value": value}

    @staticmethod
    def _label(doc):
        label = doc.get("label")
        if label is None:
            return None
        if not isinstance(label, str):
            raise APIError(400, "ClientError.BadRequest", "'label' must be a string")
        if len(label) > 128:
            raise APIError(400, "ClientError.BadRequest", "Invalid label: the maximum length is 128 characters")
        if "\n" in label or "\r" in label:
            raise APIError(400, "ClientError.BadRequest", "Invalid label: newline characters are not allowed")
        if label != label.strip():
            raise APIError(400, "ClientError.BadRequest",
                           "Invalid label: leading or trailing whitespace is not allowed")
        return label

    @staticmethod
    def _deadline(doc):
        value = doc.get("deadline")
        if value is None:
            return None
        try:
            return parse_time(value)
        except (TypeError, ValueError):
            raise APIError(400, "ClientError.BadRequest", f"Invalid deadline '{value}'") from None

    @staticmethod
    def _path(value, field):
        if not isinstance(value, str) or not value:
            raise APIError(400, "ClientError.BadRequest", f"'{field}' is required and must be a string")
        if not (value.startswith("/") or value.startswith("~")):
            raise APIError(400, "ClientError.BadRequest",
                           f"Invalid path '{value}': paths must be absolute or start with ~")
        return value

    @staticmethod
    def _sync_level(doc):
        value = doc.get("sync_level")
        if value is None:
            return None
        if isinstance(value, str) and value in SYNC_LEVELS:
            return SYNC_LEVELS[value]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3:
            return value
        raise APIError(400, "ClientError.BadRequest", f"Invalid sync_level '{value}'")

    @staticmethod
    def _filter_rules(doc):
        rules = doc.get("filter_rules")
        if rules is None:
            return None
        if not isinstance(rules, list):
            raise APIError(400, "ClientError.BadRequest", "'filter_rules' must be a list")
        out = []
        for rule in rules:
            if not isinstance(rule, dict) or rule.get("DATA_TYPE", "filter_rule") != "filter_rule":
                raise APIError(400, "ClientError.BadRequest", "filter_rules entries must be filter_rule documents")
            if rule.get("method") not in ("include", "exclude"):
                raise APIError(400, "ClientError.BadRequest", "filter_rule 'method' must be include or exclude")
            if rule.get("type") not in (None, "file", "dir"):
                raise APIError(400, "ClientError.BadRequest", "filter_rule 'type' must be file or dir")
            if not isinstance(rule.get("name"), str) or not rule["name"]:
                raise APIError(400, "ClientError.BadRequest", "filter_rule 'name' is required")
            out.append({"DATA_TYPE": "filter_rule", "method": rule["method"], "name": rule["name"],
                        "type": rule.get("type")})
        return out

    def _submission_id(self, doc):
        value = doc.get("submission_id")
        if not value:
            raise APIError(400, "ClientError.BadRequest", "'submission_id' is required; GET /submission_id first")
        if not is_uuid(value):
            raise APIError(400, "ClientError.BadRequest", f"Invalid submission_id '{value}'")
        return str(value).lower()

    def submit(self, grant, doc, kind, resource):
        """``POST /transfer`` and ``POST /delete``.  Returns (http_status, result document)."""
        if not isinstance(doc, dict):
            raise APIError(400, "ClientError.BadRequest", "Request body must be a JSON object")
        expected = "transfer" if kind == "TRANSFER" else "delete"
        if doc.get("DATA_TYPE", expected) != expected:
            raise APIError(400, "ClientError.BadRequest", f"DATA_TYPE must be '{expected}'")
        submission_id = self._submission_id(doc)
        result_type = "transfer_result" if kind == "TRANSFER" else "delete_result"
        with self.lock:
            existing = self.submissions.get(submission_id)
        if existing is not None:
            # Accepted once, however often it is resent (docs: task submission)
            return 200, self._result(result_type, "Duplicate", existing, submission_id, resource,
                                     f"A {expected} with submission id '{submission_id}' was already submitted")
        label = self._label(doc)
        deadline = self._deadline(doc)
        if kind == "TRANSFER":
            source = self.collection(doc.get("source_endpoint", ""))
            destination = self.collection(doc.get("destination_endpoint", ""))
            touched = [source, destination]
        else:
            source = self.collection(doc.get("endpoint", ""))
            destination = None
            touched = [source]
        self.check_consent(grant, touched)
        items, options = self._items_and_options(doc, kind)
        with self.lock:
            existing = self.submissions.get(submission_id)
            if existing is not None:
                return 200, self._result(result_type, "Duplicate", existing, submission_id, resource,
                                         f"A {expected} with submission id '{submission_id}' was already submitted")
            pending = sum(1 for t in self.tasks.values() if t.owner.id == grant.identity.id and not t.done)
            if pending >= self.limits.max_pending_tasks:
                raise APIError(409, "ClientError.Conflict.TooManyPendingJobs",
                               f"Too many pending tasks: the limit is {self.limits.max_pending_tasks}")
            self._seq += 1
            task = Task(self._seq, kind, grant, submission_id, source, destination, items, options, label, deadline)
            self.tasks[task.task_id] = task
            self.submissions[submission_id] = task.task_id
            self.changed.notify_all()
        message = (f"The {expected} has been accepted and a task has been created and queued for execution")
        return 202, self._result(result_type, "Accepted", task.task_id, submission_id, resource, message)

    def _items_and_options(self, doc, kind):
        data = doc.get("DATA")
        if not isinstance(data, list) or not data:
            if kind == "TRANSFER":
                raise APIError(400, "ClientError.BadRequest.NoTransferItems", "A transfer requires at least one item")
            raise APIError(400, "ClientError.BadRequest.NoDeleteItems", "A delete requires at least one item")
        items = []
        for entry in data:
            if not isinstance(entry, dict):
                raise APIError(400, "ClientError.BadRequest", "DATA entries must be objects")
            if kind == "TRANSFER":
                if entry.get("DATA_TYPE", "transfer_item") != "transfer_item":
                    raise APIError(400, "ClientError.BadRequest",
                                   f"Unsupported item type '{entry.get('DATA_TYPE')}' "
                                   "(the emulator handles transfer_item)")
                recursive = entry.get("recursive")
                if recursive is not None and not isinstance(recursive, bool):
                    raise APIError(400, "ClientError.BadRequest", "'recursive' must be a boolean")
                items.append({
                    "DATA_TYPE": "transfer_item",
                    "source_path": self._path(entry.get("source_path"), "source_path"),
                    "destination_path": self._path(entry.get("destination_path"), "destination_path"),
                    "recursive": recursive,
                    **self._checksum_fields(entry, recursive),
                })
            else:
                if entry.get("DATA_TYPE", "delete_item") != "delete_item":
                    raise APIError(400, "ClientError.BadRequest", "DATA entries must be delete_item documents")
                items.append({"DATA_TYPE": "delete_item", "path": self._path(entry.get("path"), "path")})
        options = {
            "notify_on_succeeded": _bool(doc, "notify_on_succeeded", True),
            "notify_on_failed": _bool(doc, "notify_on_failed", True),
            "notify_on_inactive": _bool(doc, "notify_on_inactive", True),
        }
        if kind == "TRANSFER":
            options.update({
                "sync_level": self._sync_level(doc),
                "verify_checksum": _bool(doc, "verify_checksum", True),
                "preserve_timestamp": _bool(doc, "preserve_timestamp"),
                "encrypt_data": _bool(doc, "encrypt_data"),
                "skip_source_errors": _bool(doc, "skip_source_errors"),
                "fail_on_quota_errors": _bool(doc, "fail_on_quota_errors"),
                "delete_destination_extra": _bool(doc, "delete_destination_extra"),
                "filter_rules": self._filter_rules(doc),
                "source_local_user": doc.get("source_local_user"),
                "destination_local_user": doc.get("destination_local_user"),
            })
        else:
            options.update({
                "recursive": _bool(doc, "recursive"),
                "ignore_missing": _bool(doc, "ignore_missing"),
                "verify_checksum": False,
                "source_local_user": doc.get("local_user"),
            })
        return items, options

    @staticmethod
    def _checksum_fields(entry, recursive):
        """``external_checksum`` (files only) and ``checksum_algorithm`` (MD5 unless named) of an item."""
        fields = {}
        for key in ("external_checksum", "checksum_algorithm"):
            value = entry.get(key)
            if value is not None and not isinstance(value, str):
                raise APIError(400, "ClientError.BadRequest", f"'{key}' must be a string")
            if value:
                fields[key] = value
        if fields.get("checksum_algorithm") and fields["checksum_algorithm"].upper() not in CHECKSUM_ALGORITHMS:
            raise APIError(400, "ClientError.BadRequest",
                           f"Unsupported checksum_algorithm '{fields['checksum_algorithm']}'")
        if fields.get("external_checksum") and recursive:
            raise APIError(400, "ClientError.BadRequest", "external_checksum cannot be used with a recursive item")
        return fields

    @staticmethod
    def _result(data_type, code, task_id, submission_id, resource, message):
        return {
            "DATA_TYPE": data_type,
            "code": code,
            "message": message,
            "request_id": request_id(),
            "resource": resource,
            "submission_id": submission_id,
            "task_id": task_id,
            "task_link": {"DATA_TYPE": "link", "href": f"task/{task_id}?format=json", "rel": "related",
                          "resource": "task", "title": "related task"},
        }

    # ------------------------------------------------------------ task queries

    def task_list(self, grant, query):
        limit = int_param(query, "limit", 10)
        offset = int_param(query, "offset", 0)
        if limit < 0 or offset < 0:
            raise APIError(400, "ClientError.BadRequest", "limit and offset must be non-negative")
        if limit > TASK_LIST_MAX:
            raise APIError(400, "ClientError.BadRequest", f"limit must be at most {TASK_LIST_MAX}")
        if offset + limit > TASK_LIST_MAX:
            raise APIError(400, "ClientError.BadRequest",
                           f"offset + limit must be at most {TASK_LIST_MAX}; narrow the listing with filters")
        predicates = task_filters(query.get("filter", ""))
        with self.lock:
            tasks = [t for t in self.tasks.values() if t.owner.id == grant.identity.id]
            tasks = [t for t in tasks if all(p(t) for p in predicates)]
            tasks = order_tasks(tasks, query.get("orderby"))
            page = [t.doc(with_data_type=False) for t in tasks[offset:offset + limit]]
            total = len(tasks)
        return {"DATA": page, "DATA_TYPE": "task_list", "length": len(page), "limit": limit, "offset": offset,
                "total": total}

    def event_list(self, grant, task_id, query):
        task = self.visible_task(grant, task_id)
        limit = int_param(query, "limit", 10)
        offset = int_param(query, "offset", 0)
        if limit < 0 or offset < 0 or limit > TASK_LIST_MAX:
            raise APIError(400, "ClientError.BadRequest", f"limit must be between 0 and {TASK_LIST_MAX}")
        if offset + limit > TASK_LIST_MAX:
            raise APIError(400, "ClientError.BadRequest", f"offset + limit must be at most {TASK_LIST_MAX}")
        want_error = None
        for clause in filter(None, query.get("filter", "").split("/")):
            key, _sep, value = clause.partition(":")
            if key != "is_error" or value not in ("0", "1", "true", "false"):
                raise APIError(400, "ClientError.BadRequest", f"Unsupported event filter '{clause}'")
            want_error = value in ("1", "true")
        with self.lock:
            events = list(reversed(task.events))
            if want_error is not None:
                events = [e for e in events if e["is_error"] == want_error]
            page = [dict(e) for e in events[offset:offset + limit]]
        return {"DATA": page, "DATA_TYPE": "event_list", "length": len(page), "limit": limit, "offset": offset,
                "total": len(events)}

    def marker_page(self, grant, task_id, query, which):
        task = self.visible_task(grant, task_id)
        marker = int_param(query, "marker", 0)
        size = self.marker_page_size
        with self.lock:
            records = task.successful if which == "successful_transfers" else task.skipped
            page = [dict(r) for r in records[marker:marker + size]]
            next_marker = marker + size if marker + size < len(records) else None
        return {"DATA": page, "DATA_TYPE": which, "marker": marker, "next_marker": next_marker}

    def update_task(self, grant, task_id, doc):
        task = self.visible_task(grant, task_id)
        if not isinstance(doc, dict) or doc.get("DATA_TYPE", "task") != "task":
            raise APIError(400, "ClientError.BadRequest", "Body must be a task document")
        unknown = set(doc) - {"DATA_TYPE", "label", "deadline"}
        if unknown:
            raise APIError(400, "ClientError.BadRequest",
                           f"Only label and deadline can be updated, not {sorted(unknown)}")
        with self.lock:
            if task.done:
                raise APIError(409, "ClientError.Conflict", "The task has already completed")
            if "label" in doc:
                task.label = self._label(doc)
            if "deadline" in doc:
                task.deadline = self._deadline(doc)
                task.user_deadline = True
        return {"DATA_TYPE": "result", "code": "Updated", "message": "Updated task",
                "request_id": request_id(), "resource": f"/task/{task.task_id}"}

    def cancel(self, grant, task_id, timeout=10.0):
        """Cancel and wait until the worker has stopped the task, as the service does."""
        task = self.visible_task(grant, task_id)
        with self.changed:
            already_done = task.done
            if not task.done:
                task.cancel_requested = True
                self.changed.notify_all()
                end = now() + timeout
                while not task.done and now() < end:
                    self.changed.wait(0.05)
            canceled = (not already_done and task.done and task.fatal_error
                        and task.fatal_error.get("code") == "CANCELED")
        if canceled:
            code, message = "Canceled", "The task has been cancelled successfully."
        elif task.done:
            code, message = "TaskComplete", "The task completed before the cancel request was processed."
        else:
            code, message = "CancelAccepted", "The cancel request has been accepted and will be processed."
        return {"DATA_TYPE": "result", "code": code, "message": message, "request_id": request_id(),
                "resource": f"/task/{task.task_id}/cancel"}
