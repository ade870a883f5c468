# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""Routes, items, scheduling and task status/event ingest for globus_transfer and globus_task_events.

An item is one (route, source path, destination collection, destination path). Its status is
PENDING until a task carries it, ACTIVE while that task runs, then SUCCEEDED or FAILED as the
task ends; a FAILED item is eligible again after an exponential backoff, up to ``max_attempts``.
Tasks are the ``globus_tasks`` rows written by the Globus layer's exactly-once submit; the task's
``job`` is the route name.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import posixpath
import re
import string
import time
from urllib.parse import quote

from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError, GlobusError
from ansible_collections.scidata.replication.plugins.module_utils._globus import (
    api_errors,
    new_submission_id,
    persist_submission,
    post_submission,
    submit_exactly_once,
)

ITEM_KEY = ["route", "source_path", "destination_collection", "destination_path"]
OPEN_TASK_STATUSES = ("UNSUBMITTED", "ACTIVE", "INACTIVE")
# Items that finished without every file at the destination; retried after a backoff.
RETRIED_ITEM_STATUSES = ("FAILED", "PARTIAL")
TERMINAL_TASK_STATUSES = ("SUCCEEDED", "FAILED")
TASK_LIST_PAGE = 1000
# task_event_list serves offset + limit <= 1000: only the newest 1000 events can ever be read.
EVENT_WINDOW = 1000
# Waits before fetching events or files again for a task whose last fetch failed.
FETCH_BACKOFF, FETCH_BACKOFF_MAX = 60, 3600
# Front ends in front of web services often refuse URLs over 8 KiB; the task_list filter keeps
# below that with room for the service URL, the path and the other parameters.
TASK_LIST_URL_MAX = 8192
TASK_LIST_URL_RESERVE = 512
# Arbitrary but fixed: every process claiming items on a PostgreSQL state database takes this
# transaction lock (SQLite's write transaction already excludes other writers).
PG_CLAIM_LOCK_KEY = 4711020302
LABEL_MAX = 128
# Globus keeps per-file history (events, successful transfers) for 30 days after completion.
HISTORY_DAYS = 30
SYNC_LEVELS = ("exists", "size", "mtime", "checksum")
# What an INACTIVE task (expired credentials or consent) needs from someone.
INACTIVE_FIX = ("renew the login or consent: run scidata.replication.globus_login (playbooks/globus_login.yml) "
                "again, with the collection in data_access_collections if it needs data_access consent, or grant "
                "the client app access again; Globus resumes the task once the credentials are valid, before its "
                "deadline")

# The TransferData options every submitting module takes (scidata.replication._transfer_options).
TRANSFER_ARGUMENT_SPEC = dict(
    sync_level=dict(type="str", default="mtime", choices=list(SYNC_LEVELS)),
    verify_checksum=dict(type="bool", default=True),
    preserve_timestamp=dict(type="bool", default=True),
    encrypt_data=dict(type="bool", default=False),
    deadline=dict(type="str"),
    time_limit=dict(type="int"),
    skip_source_errors=dict(type="bool", default=False),
    fail_on_quota_errors=dict(type="bool", default=True),
    notify_on_succeeded=dict(type="bool", default=False),
    notify_on_failed=dict(type="bool", default=False),
    notify_on_inactive=dict(type="bool", default=False),
)
TRANSFER_MUTUALLY_EXCLUSIVE = [("deadline", "time_limit")]
# The identity's task budget every submitting module takes (scidata.replication._transfer_options.task_budget).
TASK_BUDGET_ARGUMENT_SPEC = dict(identity_max_open_tasks=dict(type="int", default=100))


# -- paths and items -------------------------------------------------------------------------
def join_path(prefix, path):
    """Join a collection path prefix and a path, keeping a trailing slash (a directory)."""
    return (prefix or "/").rstrip("/") + "/" + path.lstrip("/")


def read_items_file(path):
    """One path per line (S0's ``paths/*`` lists); blank lines and ``#`` comments are skipped."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.rstrip("\r\n") for line in handle if line.strip() and not line.lstrip().startswith("#")]
    except OSError as exc:
        raise ConfigError("cannot read items_from %s: %s" % (path, exc))


def normalise_items(route):
    """The route's items as dicts: ``source`` (relative to source_prefix), optional ``destination``."""
    items = []
    for entry in (route.get("items") or []) + (read_items_file(route["items_from"]) if route.get("items_from") else []):
        if isinstance(entry, str):
            entry = {"source": entry}
        if not entry.get("source"):
            raise ConfigError("route %s: every item needs a source path" % route["name"])
        if "\n" in entry["source"] or "\r" in entry["source"]:
            raise ConfigError("route %s: item %r contains a line break" % (route["name"], entry["source"]))
        items.append(dict(source=entry["source"], destination=entry.get("destination"),
                          recursive=entry.get("recursive", route.get("recursive"))))
    return items


def item_rows(route, now):
    """Rows for ``transfer_items``: every item of the route to each of its destinations."""
    rows = []
    source_prefix = route.get("source_prefix", "/")
    for item in normalise_items(route):
        source_path = join_path(source_prefix, item["source"])
        # 1: a directory transfer (asked for, or a trailing /); 0: Globus decides from the path.
        recursive = 1 if item["recursive"] or (item["recursive"] is None and source_path.endswith("/")) else 0
        for destination in route["destinations"]:
            rows.append(dict(route=route["name"], source_collection=route["source_collection"],
                             source_path=source_path, destination_collection=destination["collection"],
                             destination_path=join_path(destination.get("prefix", "/"),
                                                        item["destination"] or item["source"]),
                             recursive=recursive, status="PENDING", attempts=0, created_at=now, updated_at=now))
    return rows


def chained_rows(db, route, now):
    """Rows for a route whose source is what SUCCEEDED on ``source_route`` at this route's source."""
    rows = []
    prefix = route.get("source_prefix", "/")
    for item in db.query(
            "SELECT destination_path, recursive FROM transfer_items WHERE route = ? AND status = 'SUCCEEDED' "
            "AND destination_collection = ? ORDER BY destination_path", (route["source_route"], route["source_collection"])):
        relative = posixpath.relpath(item["destination_path"], prefix) if prefix != "/" else item["destination_path"]
        if relative.startswith(".."):
            continue
        if item["destination_path"].endswith("/") and not relative.endswith("/"):
            relative += "/"
        for destination in route["destinations"]:
            rows.append(dict(route=route["name"], source_collection=route["source_collection"],
                             source_path=item["destination_path"], destination_collection=destination["collection"],
                             destination_path=join_path(destination.get("prefix", "/"), relative),
                             recursive=item["recursive"], status="PENDING", attempts=0, created_at=now,
                             updated_at=now))
    return rows


def register_items(db, rows):
    """Add the rows not yet known; returns how many were new (a rerun adds only new rows)."""
    return db.upsert("transfer_items", rows, key=ITEM_KEY)


# -- labels and transfer documents ------------------------------------------------------------
class _LabelFields(string.Formatter):
    ALLOWED = ("route", "items", "first", "date", "attempt")

    def get_field(self, field_name, args, kwargs):
        if field_name not in self.ALLOWED:
            raise ConfigError("label template field {%s} is unknown; use %s"
                              % (field_name, ", ".join("{%s}" % f for f in self.ALLOWED)))
        return kwargs[field_name], field_name


def render_label(template, **fields):
    """Render a label and validate it as Globus does (<= 128 characters, no line breaks)."""
    try:
        label = _LabelFields().format(template, **fields)
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigError("label template %r is invalid: %s" % (template, exc))
    if "\n" in label or "\r" in label:
        raise ConfigError("the label %r contains a line break, which Globus rejects" % label)
    if len(label) > LABEL_MAX:
        raise ConfigError("the label %r is %d characters long; Globus accepts at most %d"
                          % (label, len(label), LABEL_MAX))
    return label


def check_label_template(template, route_name):
    """Fail before any API call when the template cannot give a valid label for this route."""
    render_label(template, route=route_name, items=1, first="x", date="2000-01-01", attempt=1)


def transfer_document(source_collection, destination_collection, items, options, label, retry=False):
    """The Transfer API request body; unset options are left out, as TransferData does."""
    document = {
        "DATA_TYPE": "transfer",
        "source_endpoint": source_collection,
        "destination_endpoint": destination_collection,
        "label": label,
        # A partial transfer restarted at a weaker level can leave corrupt files behind.
        "sync_level": "checksum" if retry else options["sync_level"],
        "verify_checksum": options["verify_checksum"],
        "preserve_timestamp": options["preserve_timestamp"],
        "encrypt_data": options["encrypt_data"],
        "skip_source_errors": options["skip_source_errors"],
        "fail_on_quota_errors": options["fail_on_quota_errors"],
        "delete_destination_extra": options["delete_destination_extra"],
        "notify_on_succeeded": options["notify_on_succeeded"],
        "notify_on_failed": options["notify_on_failed"],
        "notify_on_inactive": options["notify_on_inactive"],
        "DATA": [transfer_item(i) for i in items],
    }
    if options.get("filter_rules"):
        document["filter_rules"] = [dict(((k, v) for k, v in rule.items() if v is not None), DATA_TYPE="filter_rule")
                                    for rule in options["filter_rules"]]
    deadline = deadline_for(options)
    if deadline:
        document["deadline"] = deadline
    return document


def transfer_item(item):
    """One ``transfer_item``; ``recursive`` None is left out, so the service decides from the path."""
    document = {"DATA_TYPE": "transfer_item", "source_path": item["source_path"],
                "destination_path": item["destination_path"]}
    if item["recursive"] is not None:
        document["recursive"] = bool(item["recursive"])
    return document


def deadline_for(options, now=None):
    if options.get("deadline"):
        return options["deadline"]
    if options.get("time_limit"):
        moment = datetime.datetime.fromtimestamp((now or time.time()) + options["time_limit"] * 60,
                                                 tz=datetime.timezone.utc)
        return moment.isoformat(timespec="seconds")
    return None


# -- scheduling -----------------------------------------------------------------------------
def backoff_seconds(attempts, base, cap):
    """Exponential backoff after ``attempts`` failed attempts, capped."""
    return min(cap, base * (2 ** max(attempts - 1, 0)))


def route_task_state(db, route_name):
    """Open tasks of a route and whether any of them is paused."""
    placeholders = ", ".join("?" * len(OPEN_TASK_STATUSES))
    row = db.query_one(
        "SELECT count(*) AS open_tasks, COALESCE(SUM(is_paused), 0) AS paused FROM globus_tasks "
        "WHERE job = ? AND status IN (%s)" % placeholders, (route_name,) + OPEN_TASK_STATUSES)
    return int(row["open_tasks"]), int(row["paused"]) > 0


def identity_open_tasks(db):
    """Open tasks of every route, job and host sharing the state database: Globus counts its
    limits per identity, so they all draw on one budget."""
    return int(db.scalar("SELECT count(*) FROM globus_tasks WHERE status IN (%s)"
                         % ", ".join("?" * len(OPEN_TASK_STATUSES)), OPEN_TASK_STATUSES))


def budget_reason(open_tasks, limit):
    return "waiting for task budget: %d of %d open tasks for this Globus identity (identity_max_open_tasks)" % (
        open_tasks, limit)


def claim_task_budget(db, limit):
    """Inside the caller's write transaction, before it writes a new task: None when the identity
    has room for one more open task, else the reason to wait. On PostgreSQL the claim lock makes
    this check and the caller's writes one step for every process sharing the state database."""
    if db.dialect == "postgresql":
        db.execute("SELECT pg_advisory_xact_lock(?)", (PG_CLAIM_LOCK_KEY,))
    identity_open = identity_open_tasks(db)
    return budget_reason(identity_open, limit) if identity_open >= limit else None


def eligible_items(db, route, limit, now, policy):
    """PENDING items, then FAILED ones whose backoff has passed, in the route's order."""
    if limit <= 0:
        return []
    order = "DESC" if route.get("order") == "desc" else "ASC"
    columns = "id, source_path, destination_collection, destination_path, recursive, status, attempts"
    items = db.query("SELECT %s FROM transfer_items WHERE route = ? AND status = 'PENDING' "
                     "ORDER BY source_path %s, destination_collection LIMIT %d" % (columns, order, int(limit)),
                     (route["name"],))
    if len(items) < limit:
        for item in db.query("SELECT %s, updated_at FROM transfer_items WHERE route = ? AND status IN %s "
                             "AND attempts < ? ORDER BY updated_at" % (columns, _sql_list(RETRIED_ITEM_STATUSES)),
                             (route["name"], policy["max_attempts"])):
            if item["updated_at"] + backoff_seconds(item["attempts"], policy["retry_backoff"],
                                                    policy["retry_backoff_max"]) <= now:
                items.append(item)
                if len(items) >= limit:
                    break
    return items


def tried_before(item):
    """Whether an item was in a task before: then it goes with ``sync_level`` checksum, even when the
    failure of that task was not charged to it (see ``settle_items``)."""
    return item["attempts"] > 0 or item["status"] != "PENDING"


def batches(items, size):
    """Group items per destination collection into tasks of at most ``size`` items. An item
    charged with a failure goes alone: a task that fails without naming the file at fault fails
    all it carries, so one bad path in a shared task must not use up the attempts of the healthy ones."""
    by_destination = {}
    for item in items:
        by_destination.setdefault(item["destination_collection"], []).append(item)
    groups = []
    for destination, group in by_destination.items():
        first_tries = [item for item in group if not item["attempts"]]
        for start in range(0, len(first_tries), size):
            groups.append((destination, first_tries[start:start + size]))
        groups.extend((destination, [item]) for item in group if item["attempts"])
    return groups


def route_task_limit(route, policy):
    return route.get("max_active_tasks") or policy["max_active_tasks"]


def plan_route(db, route, policy, budget, now):
    """What one route may submit now: ``(batches, reason, waiting_for_budget)``; reason says why
    nothing, if so. ``budget`` is what is left of this run's submissions."""
    open_tasks, paused = route_task_state(db, route["name"])
    if paused:
        return [], "a task of this route is paused", False
    primary = route.get("overflow_for")
    if primary and not route_task_state(db, primary)[1]:
        return [], "overflow route: used only while %s has a paused task" % primary, False
    slots = min(route_task_limit(route, policy) - open_tasks, budget)
    if slots <= 0:
        inactive = db.scalar("SELECT count(*) FROM globus_tasks WHERE job = ? AND status = 'INACTIVE'", (route["name"],))
        if inactive:
            return [], ("%d tasks open, %d of them INACTIVE: they need a login or consent renewal "
                        "(see tasks_needing_attention)" % (open_tasks, inactive)), False
        return [], "%d tasks already active" % open_tasks, False
    size = route.get("items_per_task") or policy["items_per_task"]
    identity_open = identity_open_tasks(db)
    identity_slots = policy["identity_max_open_tasks"] - identity_open
    items = eligible_items(db, route, min(slots, max(identity_slots, 1)) * size, now, policy)
    if not items:
        return [], "nothing to send", False
    if identity_slots <= 0:
        return [], budget_reason(identity_open, policy["identity_max_open_tasks"]), True
    return batches(items, size)[:min(slots, identity_slots)], None, False


def claim_items(db, route, items, policy, now):
    """Inside the caller's write transaction: take the items no other run has taken since they
    were planned, if the route and the identity still have room for one more task.

    Returns ``(claimed items, reason, waiting for budget)``; a claimed item is ACTIVE with one
    more attempt. The conditional update (same status and attempts as planned) makes the claim
    atomic whatever else runs; on PostgreSQL, rows another transaction holds are skipped instead
    of waited for, and the claim lock makes the budget check and the claim one step."""
    waiting = claim_task_budget(db, policy["identity_max_open_tasks"])
    if waiting:
        return [], waiting, True
    open_tasks = route_task_state(db, route["name"])[0]
    if open_tasks >= route_task_limit(route, policy):
        return [], "%d tasks already active" % open_tasks, False
    candidates = items
    if db.dialect == "postgresql":
        free = set(row["id"] for row in db.query(
            "SELECT id FROM transfer_items WHERE id IN (%s) FOR UPDATE SKIP LOCKED" % ", ".join("?" * len(items)),
            [item["id"] for item in items]))
        candidates = [item for item in items if item["id"] in free]
    claimed = [item for item in candidates if db.execute(
        "UPDATE transfer_items SET status = 'ACTIVE', attempts = attempts + 1, updated_at = ? "
        "WHERE id = ? AND status = ? AND attempts = ?", (now, item["id"], item["status"], item["attempts"])) == 1]
    return claimed, None if claimed else "its items were taken by another run", False


def submit_batch(db, client, route, destination, items, options, label_template, policy, now):
    """Claim the planned items and submit one task for those claimed, exactly once.

    The submission id is fetched before the write transaction (claim, task row, link), so that
    no lock is held across a network call. Returns ``(result, None, False)``, or ``(None,
    reason, waiting for budget)`` when nothing could be claimed. A request the service refuses
    fails the items it carried (``reject_items``)."""
    submission_id = new_submission_id(client)
    with db.transaction():
        claimed, reason, waiting = claim_items(db, route, items, policy, now)
        if not claimed:
            return None, reason, waiting
        label = render_label(label_template, route=route["name"], items=len(claimed),
                             first=posixpath.basename(claimed[0]["source_path"].rstrip("/")) or "/",
                             date=datetime.datetime.fromtimestamp(now, tz=datetime.timezone.utc).strftime("%Y-%m-%d"),
                             attempt=max(item["attempts"] for item in claimed) + 1)
        document = transfer_document(route["source_collection"], destination,
                                     [dict(item, recursive=True if item["recursive"] else None) for item in claimed],
                                     options, label, retry=any(tried_before(item) for item in claimed))

        def link(db_, submission_id_):
            db_.execute("UPDATE transfer_items SET submission_id = ? WHERE id IN (%s)"
                        % ", ".join("?" * len(claimed)), [submission_id_] + [item["id"] for item in claimed])

        persist_submission(db, client, route["name"], document, link=link, submission_id=submission_id)
    result = post_submission(db, client, submission_id, on_rejected=reject_items)
    result.update(route=route["name"], items=len(claimed), sync_level=document["sync_level"], label=label)
    return result, None, False


def describe_batch(route, destination, items, retry_level):
    """What check mode reports for a task it would submit."""
    return dict(route=route["name"], destination_collection=destination, items=len(items),
                sync_level="checksum" if any(tried_before(i) for i in items) else retry_level,
                paths=[dict(source=i["source_path"], destination=i["destination_path"]) for i in items])


def route_counts(db, route_name):
    counts = dict(PENDING=0, ACTIVE=0, SUCCEEDED=0, PARTIAL=0, FAILED=0)
    for row in db.query("SELECT status, count(*) AS n FROM transfer_items WHERE route = ? GROUP BY status",
                        (route_name,)):
        counts[row["status"]] = int(row["n"])
    return counts


def exhausted_items(db, route_name, max_attempts):
    """FAILED or PARTIAL items that reached the attempt cap: reported, never retried."""
    return [dict(source=r["source_path"], destination=r["destination_path"], attempts=r["attempts"],
                 status=r["status"], last_error=r["last_error"]) for r in db.query(
        "SELECT source_path, destination_path, attempts, status, last_error FROM transfer_items "
        "WHERE route = ? AND status IN %s AND attempts >= ? ORDER BY source_path" % _sql_list(RETRIED_ITEM_STATUSES),
        (route_name, max_attempts))]


def partial_items(db, route_name):
    """PARTIAL items with the files their last task skipped (path and error code)."""
    report = []
    for row in db.query("SELECT i.source_path, i.destination_path, i.attempts, t.task_id FROM transfer_items i "
                        "JOIN globus_tasks t ON t.submission_id = i.submission_id WHERE i.route = ? "
                        "AND i.status = 'PARTIAL' ORDER BY i.source_path", (route_name,)):
        skipped = [dict(path=f["source_path"], error_code=f["error_code"]) for f in db.query(
            "SELECT source_path, error_code FROM task_files WHERE task_id = ? AND kind = 'skipped' "
            "ORDER BY source_path", (row["task_id"],)) if _under(f["source_path"], row["source_path"])]
        report.append(dict(source=row["source_path"], destination=row["destination_path"], attempts=row["attempts"],
                           skipped=skipped))
    return report


def _sql_list(values):
    """Constant strings as an SQL list literal (never user input)."""
    return "(%s)" % ", ".join("'%s'" % value for value in values)


# -- deleting sources after success ---------------------------------------------------------
def deletion_candidates(db, route_name):
    """Source paths of the route replicated everywhere they are wanted and not yet deleted.

    A source path counts as replicated only when every item with that source, on any route,
    SUCCEEDED: another route may still need it. Returns rows with the newest request time of
    the tasks that carried it."""
    rows = db.query(
        "SELECT i.source_collection, i.source_path, MAX(i.recursive) AS recursive, MAX(t.request_time) AS request_time "
        "FROM transfer_items i JOIN globus_tasks t ON t.submission_id = i.submission_id "
        "WHERE i.route = ? AND i.status = 'SUCCEEDED' AND i.delete_submission_id IS NULL "
        "AND i.source_deleted_at IS NULL GROUP BY i.source_collection, i.source_path ORDER BY i.source_path",
        (route_name,))
    candidates, blocked = [], []
    for row in rows:
        pending = db.query("SELECT DISTINCT route, status FROM transfer_items WHERE source_collection = ? "
                           "AND source_path = ? AND status <> 'SUCCEEDED' ORDER BY route, status",
                           (row["source_collection"], row["source_path"]))
        if pending:
            blocked.append(dict(source=row["source_path"], reason="not yet replicated by route %s"
                                % ", ".join("%s (%s)" % (r["route"], r["status"]) for r in pending)))
        else:
            candidates.append(row)
    for row in db.query("SELECT source_path, last_error FROM transfer_items WHERE route = ? AND status = 'PARTIAL' "
                        "ORDER BY source_path, destination_collection", (route_name,)):
        if row["source_path"] not in [b["source"] for b in blocked]:
            blocked.append(dict(source=row["source_path"], reason="PARTIAL: %s" % row["last_error"]))
    return candidates, blocked


def list_files(client, collection, path, recursive):
    """The files at ``path`` (a file, or for a directory everything below it) listed through the
    Transfer API: ``({path relative to it: size}, newest last_modified in epoch seconds, whether
    it is a directory)``."""
    if not path.endswith("/") and not recursive:
        directory, name = posixpath.split(path)
        with api_errors("list %s on %s" % (directory, collection), collection=collection):
            entries = client.operation_ls(collection, path=directory or "/", filter="name:" + name)["DATA"]
        if not any(e.get("type") == "dir" for e in entries):  # else Globus chose a directory transfer
            files = dict(("", e.get("size")) for e in entries)
            return files, max([parse_time(e["last_modified"]) for e in entries] or [None], key=lambda v: v or 0), False
    files, newest, pending = {}, None, [""]
    while pending:
        relative = pending.pop()
        directory = join_path(path, relative) if relative else path
        offset = 0
        while True:
            with api_errors("list %s on %s" % (directory, collection), collection=collection):
                page = client.operation_ls(collection, path=directory, show_hidden=True, limit=1000, offset=offset)
            for entry in page["DATA"]:
                modified = parse_time(entry.get("last_modified"))
                newest = modified if newest is None or (modified or 0) > newest else newest
                name = posixpath.join(relative, entry["name"])
                if entry.get("type") == "dir":
                    pending.append(name + "/")
                else:
                    files[name] = entry.get("size")
            offset += len(page["DATA"])
            if not page["DATA"] or offset >= page.get("total", offset):
                break
    return files, newest, True


def missing_at_destinations(db, client, row, source_files):
    """Source files that some destination of this source path does not hold (absent, or another
    size), as ``destination collection:path`` strings."""
    missing = []
    for item in db.query("SELECT destination_collection, destination_path FROM transfer_items "
                         "WHERE source_collection = ? AND source_path = ? ORDER BY destination_collection, "
                         "destination_path", (row["source_collection"], row["source_path"])):
        held = list_files(client, item["destination_collection"], item["destination_path"], row["recursive"])[0]
        missing.extend("%s:%s" % (item["destination_collection"], join_path(item["destination_path"], name)
                                  if name else item["destination_path"])
                       for name, size in sorted(source_files.items()) if name not in held or held[name] != size)
    return missing


def plan_deletions(db, client, route):
    """Which sources of the route may be deleted now, and why the others may not.

    A source is deleted only when nothing under it changed since its transfer started and every
    destination, listed now, holds each of its files with the same size."""
    candidates, blocked = deletion_candidates(db, route["name"])
    allowed = []
    for row in candidates:
        try:
            files, newest, directory = list_files(client, row["source_collection"], row["source_path"],
                                                  row["recursive"])
            row = dict(row, recursive=1 if directory else 0)
            missing = missing_at_destinations(db, client, row, files)
        except GlobusError as exc:
            blocked.append(dict(source=row["source_path"], reason="cannot confirm the replicas: %s" % exc.msg))
            continue
        if newest is not None and row["request_time"] is not None and newest >= row["request_time"]:
            blocked.append(dict(source=row["source_path"], reason="modified after its transfer started; it will be "
                                "sent again only if it is registered again"))
        elif missing:
            blocked.append(dict(source=row["source_path"], reason="%d file(s) not at a destination: %s"
                                % (len(missing), ", ".join(missing[:5]))))
        else:
            allowed.append(row)
    return allowed, blocked


def submit_deletion(db, client, route, rows, label):
    """One delete task for the given sources, submitted exactly once; the items remember it."""
    document = {"DATA_TYPE": "delete", "endpoint": route["source_collection"], "label": label,
                "recursive": any(bool(r["recursive"]) for r in rows), "ignore_missing": False,
                "DATA": [{"DATA_TYPE": "delete_item", "path": r["source_path"]} for r in rows]}

    def link(db_, submission_id):
        for row in rows:
            db_.execute("UPDATE transfer_items SET delete_submission_id = ? WHERE source_collection = ? "
                        "AND source_path = ?", (submission_id, row["source_collection"], row["source_path"]))

    return submit_exactly_once(db, client, route["name"], document, link=link, kind="delete", on_rejected=reject_items)


def reject_items(db, submission_id, message):
    """A request the service refused settles what it carried: its transfer items become FAILED
    with the service's message (retried per policy), its sources wait for a new delete task."""
    now = time.time()
    db.execute("UPDATE transfer_items SET status = 'FAILED', last_error = ?, updated_at = ? "
               "WHERE submission_id = ? AND status = 'ACTIVE'", ("rejected: %s" % message, now, submission_id))
    db.execute("UPDATE transfer_items SET delete_submission_id = NULL, delete_note = ?, updated_at = ? "
               "WHERE delete_submission_id = ?", ("delete rejected: %s" % message, now, submission_id))


# -- task status refresh --------------------------------------------------------------------
TASK_COLUMNS = ("status", "nice_status", "files", "files_transferred", "files_skipped", "directories",
                "bytes_transferred", "bytes_checksummed", "effective_bytes_per_second", "faults")


def parse_time(value):
    """Globus ISO times ('2024-01-01T00:00:00+00:00') as epoch seconds."""
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _task_filter(jobs, task_ids):
    """SQL conditions (and parameters) for submitted tasks, optionally of some jobs or ids."""
    where, params = " AND task_id IS NOT NULL", []
    for column, values in (("job", jobs), ("task_id", task_ids)):
        if values:
            where += " AND %s IN (%s)" % (column, ", ".join("?" * len(values)))
            params.extend(values)
    return where, params


def open_task_ids(db, jobs=None, task_ids=None, limit=None):
    """Submitted tasks that are not finished, oldest first, optionally narrowed."""
    where, params = _task_filter(jobs, task_ids)
    sql = "SELECT task_id FROM globus_tasks WHERE status IN ('ACTIVE', 'INACTIVE')%s ORDER BY id" % where
    if limit:
        sql += " LIMIT %d" % int(limit)
    return [row["task_id"] for row in db.query(sql, params)]


def task_id_chunks(task_ids):
    """The ids in groups whose ``task_id:`` filter, URL-encoded, keeps a task_list URL within
    ``TASK_LIST_URL_MAX`` (about 195 task UUIDs per request)."""
    room = TASK_LIST_URL_MAX - TASK_LIST_URL_RESERVE - len(quote("task_id:", safe=""))
    chunk, used = [], 0
    for task_id in task_ids:
        cost = len(quote("," + task_id, safe=""))
        if chunk and (used + cost > room or len(chunk) == TASK_LIST_PAGE):
            yield chunk
            chunk, used = [], 0
        chunk.append(task_id)
        used += cost
    if chunk:
        yield chunk


def refresh_tasks(db, client, task_ids):
    """Update tasks from ``task_list`` filtered by id (as many ids per call as fit in the URL,
    never one call per task) and settle the items of tasks that finished. Returns {task_id: new
    status} for changes.

    A task missing from the reply is asked for once by id; if the service does not know it for
    this identity (404), it is LOST (see ``mark_lost``)."""
    changes = {}
    for chunk in task_id_chunks(task_ids):
        with api_errors("list tasks"):
            documents = client.task_list(filter="task_id:" + ",".join(chunk), limit=TASK_LIST_PAGE)["DATA"]
        listed = set(d["task_id"] for d in documents)
        lost = []
        for task_id in (t for t in chunk if t not in listed):
            document = visible_task(client, task_id)
            if document is None:
                lost.append(task_id)
            else:
                documents.append(document)
        # Read before the write transaction: no lock is held across a network call.
        skipped = dict((d["task_id"], skipped_files(db, client, d)) for d in documents)
        for document in documents:
            read_failure_events(db, client, document)
        pause_reasons = dict((d["task_id"], pause_reason(client, d)) for d in documents if d.get("is_paused"))
        now = time.time()
        with db.transaction():
            for document in documents:
                before = db.query_one("SELECT status, is_paused, submission_id, kind FROM globus_tasks WHERE task_id = ?",
                                      (document["task_id"],))
                if before is None:
                    continue
                values = [document.get(column) if column in ("status", "nice_status") else document.get(column) or 0
                          for column in TASK_COLUMNS]
                fatal = document.get("fatal_error")
                db.execute(
                    "UPDATE globus_tasks SET %s, is_paused = ?, request_time = ?, completion_time = ?, "
                    "fatal_error = ?, pause_reason = ?, updated_at = ? WHERE task_id = ?"
                    % ", ".join("%s = ?" % c for c in TASK_COLUMNS),
                    tuple(values) + (1 if document.get("is_paused") else 0, parse_time(document.get("request_time")),
                                     parse_time(document.get("completion_time")), json.dumps(fatal) if fatal else None,
                                     pause_reasons.get(document["task_id"]), now, document["task_id"]))
                if before["status"] != document["status"] or bool(before["is_paused"]) != bool(document.get("is_paused")):
                    changes[document["task_id"]] = document["status"]
                if document["status"] in TERMINAL_TASK_STATUSES and before["status"] not in TERMINAL_TASK_STATUSES:
                    settle_items(db, before["submission_id"], document, now, kind=before["kind"],
                                 skipped=skipped[document["task_id"]])
            for task_id in lost:
                if mark_lost(db, task_id, now):
                    changes[task_id] = "LOST"
    return changes


def pause_reason(client, document):
    """Why a paused task is paused: the messages of the pause rules holding it (``pause_info``),
    or its nice_status when the service does not say."""
    try:
        with api_errors("read why task %s is paused" % document["task_id"]):
            info = client.task_pause_info(document["task_id"]).data
    except GlobusError:
        info = {}
    messages = [rule.get("message") for rule in info.get("pause_rules") or []]
    messages += [info.get(side + "_pause_message") for side in ("source", "destination")]
    return "; ".join(m for m in messages if m) or document.get("nice_status") or "paused"


def tasks_needing_attention(db, route_name):
    """Open tasks of a route that wait for someone: INACTIVE (credentials or consent expired) or
    paused (by a collection's administrator), each with the reason and what fixes it."""
    report = []
    for row in db.query("SELECT task_id, status, nice_status, pause_reason FROM globus_tasks WHERE job = ? "
                        "AND (status = 'INACTIVE' OR (status = 'ACTIVE' AND is_paused = 1)) ORDER BY id",
                        (route_name,)):
        if row["status"] == "INACTIVE":
            report.append(dict(task_id=row["task_id"], status="INACTIVE", reason=row["nice_status"] or "INACTIVE",
                               fix=INACTIVE_FIX))
        else:
            report.append(dict(task_id=row["task_id"], status="PAUSED", reason=row["pause_reason"] or "paused",
                               fix="a collection administrator paused it; it resumes when the pause is lifted"))
    return report


def visible_task(client, task_id):
    """The task document, or None when the service answers 404 (not visible to this identity)."""
    try:
        with api_errors("read task %s" % task_id):
            return client.get_task(task_id).data
    except GlobusError as exc:
        if exc.details.get("http_status") == 404:
            return None
        raise


def mark_lost(db, task_id, now):
    """A task this identity cannot see (other credentials, or gone from the user's history) is
    LOST: it no longer counts against any cap, its events are not asked for again, its transfer
    items become FAILED (retried with sync_level checksum) and its delete is planned anew."""
    row = db.query_one("SELECT submission_id FROM globus_tasks WHERE task_id = ? AND status IN ('ACTIVE', 'INACTIVE')",
                       (task_id,))
    if row is None:
        return False
    db.execute("UPDATE globus_tasks SET status = 'LOST', nice_status = ?, events_complete = 1, updated_at = ? "
               "WHERE task_id = ?", ("not visible to this identity", now, task_id))
    message = lost_message(task_id)
    db.execute("UPDATE transfer_items SET status = 'FAILED', last_error = ?, updated_at = ? "
               "WHERE submission_id = ? AND status = 'ACTIVE'", (message, now, row["submission_id"]))
    db.execute("UPDATE transfer_items SET delete_submission_id = NULL, delete_note = ?, updated_at = ? "
               "WHERE delete_submission_id = ?", (message, now, row["submission_id"]))
    return True


def lost_message(task_id):
    return ("task %s is LOST: Globus does not show it to these credentials (changed credentials, or the task "
            "left the history); its items are sent again with sync_level checksum" % task_id)


def settle_items(db, submission_id, document, now, kind="transfer", skipped=()):
    """A finished task decides its items: SUCCEEDED, PARTIAL (some files under it skipped) or
    FAILED; PARTIAL and FAILED items are retried later by globus_transfer.
    A finished delete task records the deletion of its sources, or why it failed."""
    if kind == "delete":
        if document["status"] == "SUCCEEDED":
            db.execute("UPDATE transfer_items SET source_deleted_at = ?, updated_at = ? WHERE delete_submission_id = ?",
                       (now, now, submission_id))
        else:
            fatal = document.get("fatal_error") or {}
            db.execute("UPDATE transfer_items SET delete_note = ?, updated_at = ? WHERE delete_submission_id = ?",
                       ("delete failed: %s" % fatal.get("code", "FAILED"), now, submission_id))
        return
    if document["status"] == "SUCCEEDED":
        for item_id, files in _skips_per_item(db, submission_id, skipped).items():
            db.execute("UPDATE transfer_items SET status = 'PARTIAL', last_error = ?, updated_at = ? WHERE id = ?",
                       (skipped_summary(files), now, item_id))
        if skipped:
            db.upsert("task_files", [dict(task_id=document["task_id"], kind="skipped", source_path=d["source_path"],
                                          destination_path=d.get("destination_path"), error_code=d.get("error_code"),
                                          error_details=d.get("error_details")) for d in skipped],
                      key=["task_id", "kind", "source_path"])
        db.execute("UPDATE transfer_items SET status = 'SUCCEEDED', completed_at = ?, updated_at = ?, last_error = NULL "
                   "WHERE submission_id = ? AND status = 'ACTIVE'", (now, now, submission_id))
    else:
        fatal = document.get("fatal_error") or {}
        error = "%s: %s" % (fatal.get("code", "FAILED"), fatal.get("description", document.get("nice_status") or ""))
        blamed = _failed_paths_per_item(db, submission_id, document["task_id"], fatal.get("code"))
        for item_id, paths in blamed.items():
            db.execute("UPDATE transfer_items SET status = 'FAILED', last_error = ?, updated_at = ? WHERE id = ?",
                       ("%s (%s)" % (error, ", ".join(paths)), now, item_id))
        if blamed:
            # The failure is another item's: the rest are tried again without being charged an attempt.
            note = "not charged: task %s failed on another item (%s)" % (document["task_id"], fatal.get("code", "FAILED"))
            db.execute("UPDATE transfer_items SET status = 'FAILED', attempts = attempts - 1, last_error = ?, "
                       "updated_at = ? WHERE submission_id = ? AND status = 'ACTIVE' AND attempts > 0",
                       (note, now, submission_id))
        db.execute("UPDATE transfer_items SET status = 'FAILED', last_error = ?, updated_at = ? "
                   "WHERE submission_id = ? AND status = 'ACTIVE'", (error, now, submission_id))


def _under(path, item_path):
    path, item_path = path.rstrip("/"), item_path.rstrip("/")
    return path == item_path or path.startswith(item_path + "/")


# The service names the file an error event is about on a ``File:`` line of its details.
EVENT_FILE = re.compile(r"^File: *(\S.*?)\s*$", re.MULTILINE)


def _failed_paths_per_item(db, submission_id, task_id, code):
    """The ACTIVE items of a failed task that its stored error events with the fatal code name
    (by source or destination path), with the paths named; empty when no event names one."""
    if not code:
        return {}
    items = db.query("SELECT id, source_path, destination_path FROM transfer_items WHERE submission_id = ? "
                     "AND status = 'ACTIVE'", (submission_id,))
    per_item = {}
    for event in db.query("SELECT details FROM task_events WHERE task_id = ? AND is_error = 1 AND code = ? ORDER BY id",
                          (task_id, code)):
        for path in EVENT_FILE.findall(event["details"] or ""):
            for item in items:
                if (_under(path, item["source_path"]) or _under(path, item["destination_path"])) \
                        and path not in per_item.get(item["id"], []):
                    per_item.setdefault(item["id"], []).append(path)
    return per_item


def _skips_per_item(db, submission_id, skipped):
    """The skipped files of a task, per item they lie under; a skip no item claims counts
    against every item of the task (nothing may pass as complete on a guess)."""
    if not skipped:
        return {}
    items = db.query("SELECT id, source_path FROM transfer_items WHERE submission_id = ? AND status = 'ACTIVE'",
                     (submission_id,))
    per_item = {}
    for document in skipped:
        owners = [i["id"] for i in items if _under(document["source_path"], i["source_path"])] or [i["id"] for i in items]
        for item_id in owners:
            per_item.setdefault(item_id, []).append(document)
    return per_item


def skipped_summary(files, shown=5):
    """``last_error`` of a PARTIAL item: how many files were skipped, the first few with their code."""
    listed = "; ".join("%s (%s)" % (d["source_path"], d.get("error_code") or "skipped") for d in files[:shown])
    more = " and %d more" % (len(files) - shown) if len(files) > shown else ""
    return "%d file(s) skipped, not at the destination: %s%s" % (len(files), listed, more)


def skipped_files(db, client, document):
    """The ``skipped_errors`` of a transfer task that just SUCCEEDED with items to settle.

    Asked only when the request allowed skips and the task does not say it skipped nothing."""
    request = _request_to_settle(db, document["task_id"])
    if request is None or document["status"] != "SUCCEEDED" or document.get("subtasks_skipped_errors") == 0:
        return []
    if not json.loads(request).get("skip_source_errors"):
        return []
    return task_files(client, document["task_id"], "skipped_errors")


def read_failure_events(db, client, document):
    """Store the error events of a transfer task that just FAILED with items to settle, so that
    settling can charge the failure to the items whose files they name."""
    if document["status"] != "FAILED" or _request_to_settle(db, document["task_id"]) is None:
        return
    try:
        ingest_events(db, client, document["task_id"], errors_only=True)
    except GlobusError:
        pass  # without its events the failure is charged to every item of the task


def _request_to_settle(db, task_id):
    """The request of a transfer task not yet seen finished that still has ACTIVE items, or None."""
    return db.scalar("SELECT t.request FROM globus_tasks t WHERE t.task_id = ? AND t.kind = 'transfer' "
                     "AND t.status NOT IN ('SUCCEEDED', 'FAILED') AND EXISTS (SELECT 1 FROM transfer_items i "
                     "WHERE i.submission_id = t.submission_id AND i.status = 'ACTIVE')", (task_id,))


# -- events ---------------------------------------------------------------------------------
def event_rows(task_id, events):
    """``task_events`` rows for events given oldest first; PROGRESS details are parsed into bytes,
    Mbps and duration.

    The service gives events no id: time, code, description and details tell them apart, and
    identical events (the same error repeated within one second) are told apart by their order."""
    rows, seen = [], {}
    for event in events:
        details = event.get("details") or ""
        parsed = {}
        if event.get("code") == "PROGRESS" and details.startswith("{"):
            try:
                parsed = json.loads(details)
            except ValueError:
                parsed = {}
        fields = "\x1f".join([event.get("time") or "", event.get("code") or "", event.get("description") or "",
                              details])
        repeat = seen.get(fields, 0)
        seen[fields] = repeat + 1
        # The first of identical events keeps the fingerprint it always had.
        fingerprint = hashlib.sha1((fields + ("\x1f#%d" % repeat if repeat else "")).encode("utf-8")).hexdigest()
        rows.append(dict(task_id=task_id, time=parse_time(event.get("time")), code=event.get("code") or "",
                         is_error=1 if event.get("is_error") else 0, description=event.get("description"),
                         details=details, bytes=parsed.get("bytes_transferred"), mbps=parsed.get("mbps"),
                         duration=parsed.get("duration"), fingerprint=fingerprint))
    return rows


def ingest_events(db, client, task_id, errors_only=False):
    """Store the task's events that the service still lists; returns ``(new rows, truncated)``.

    The service lists only the newest 1000 events (offset + limit <= 1000). A longer history is
    stored as far as it reaches and the task is marked ``events_truncated``; that is no error."""
    query = {"filter": "is_error:1"} if errors_only else None
    with api_errors("list events of task %s" % task_id):
        page = client.task_event_list(task_id, limit=EVENT_WINDOW, offset=0, query_params=query)
    events = page["DATA"]
    total = page.get("total", len(events))
    truncated = total > len(events)
    rows = event_rows(task_id, reversed(events))
    with db.transaction():
        new = db.upsert("task_events", rows, key=["task_id", "fingerprint"])
        db.execute("UPDATE globus_tasks SET events_truncated = ?, fetch_failures = 0, fetch_retry_at = NULL, "
                   "fetch_error = NULL WHERE task_id = ?", (1 if truncated else 0, task_id))
        if not errors_only:
            db.execute("UPDATE globus_tasks SET events_ingested = ? WHERE task_id = ?", (total, task_id))
    return new, truncated


def fetch_failed(db, task_id, error, now):
    """Book a failed fetch of a task's events or files; returns the seconds until the next try."""
    failures = (db.scalar("SELECT fetch_failures FROM globus_tasks WHERE task_id = ?", (task_id,)) or 0) + 1
    wait = backoff_seconds(failures, FETCH_BACKOFF, FETCH_BACKOFF_MAX)
    db.execute("UPDATE globus_tasks SET fetch_failures = ?, fetch_retry_at = ?, fetch_error = ? WHERE task_id = ?",
               (failures, now + wait, error, task_id))
    return wait


def tasks_needing_events(db, now, jobs=None, task_ids=None, limit=None):
    """Finished tasks whose events are not complete, oldest completion first (Globus forgets
    per-file history after 30 days), then open tasks; a task whose last fetch failed waits
    for its backoff."""
    where, params = _task_filter(jobs, task_ids)
    sql = ("SELECT task_id, status, completion_time FROM globus_tasks WHERE events_complete = 0 "
           "AND (fetch_retry_at IS NULL OR fetch_retry_at <= ?)%s" % where)
    params = [now] + params
    sql += " ORDER BY CASE WHEN status IN ('SUCCEEDED', 'FAILED') THEN 0 ELSE 1 END, completion_time, id"
    if limit:
        sql += " LIMIT %d" % int(limit)
    return db.query(sql, params)


def mark_events_complete(db, task_id):
    db.execute("UPDATE globus_tasks SET events_complete = 1 WHERE task_id = ?", (task_id,))


def history_expiring(completion_time, now, warn_days=HISTORY_DAYS - 5):
    return completion_time is not None and now - completion_time > warn_days * 86400


def task_files(client, task_id, kind):
    """All pages (marker paging) of a finished task's ``successful_transfers`` or ``skipped_errors``."""
    call = client.task_successful_transfers if kind == "successful_transfers" else client.task_skipped_errors
    marker, documents = None, []
    while True:
        with api_errors("list %s of task %s" % (kind, task_id)):
            page = call(task_id, marker=marker) if marker else call(task_id)
        documents.extend(page["DATA"])
        marker = page.get("next_marker")
        if not marker:
            return documents


def ingest_task_files(db, client, task_id):
    """Store which files a finished task transferred and which it skipped; returns how many new.
    Only for finished tasks: the service answers 400 while a task runs."""
    rows = [dict(task_id=task_id, kind="succeeded", source_path=d["source_path"],
                 destination_path=d.get("destination_path"), error_code=None, error_details=None)
            for d in task_files(client, task_id, "successful_transfers")]
    rows += [dict(task_id=task_id, kind="skipped", source_path=d["source_path"],
                  destination_path=d.get("destination_path"), error_code=d.get("error_code"),
                  error_details=d.get("error_details")) for d in task_files(client, task_id, "skipped_errors")]
    return db.upsert("task_files", rows, key=["task_id", "kind", "source_path"])
