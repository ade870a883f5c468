# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""The replication dashboard: SQL aggregates of the state database, rendered as a static site.

``collect(db)`` reads everything the dashboard shows with a handful of aggregate queries (GROUP
BY in the database, hour buckets included, never a Python loop over all rows); ``render_site``
turns that data into ``{file name: bytes}`` (``index.html`` with inline SVG charts drawn by
matplotlib, and one JSON file per dataset); ``publish_site`` swaps a new generation in
atomically. The output is a pure function of the database content: the time axis ends at the
newest time recorded in the database, never at the wall clock, so an unchanged database gives
byte-identical files.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import tempfile
import uuid
from urllib.parse import quote

from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError, MissingLibraryError

# The dialect differences of this file, all of them: the hour bucket of an epoch-seconds column.
_HOUR_BUCKET = {
    "sqlite": "CAST(({0}) / 3600 AS INTEGER)",
    "postgresql": "CAST(floor(({0}) / 3600) AS BIGINT)",
}

SITE_FILES = ("index.html", "summary.json", "tasks.json", "progress.json", "items_failing.json", "epns.json",
              "jobs.json")
FORMAT_VERSION = 1
DEFAULT_GLOBUS_APP_URL = "https://app.globus.org"
# Routes drawn one by one in the bytes chart; the others are summed into one series.
CHART_ROUTES = 8
ACTIVE_TASK_STATUSES = ("ACTIVE", "INACTIVE")
KNOWN_STATUSES = ("SUCCEEDED", "PARTIAL", "ACTIVE", "INACTIVE", "FAILED", "PENDING", "UNSUBMITTED", "LOST", "REJECTED")
EPN_STATE_ORDER = ("failed", "retry", "pending", "synced")
STDERR_SHOWN = 600


def hour_bucket(db, column):
    """SQL for the hour number (epoch seconds // 3600) of ``column`` on ``db``'s dialect."""
    return _HOUR_BUCKET[db.dialect].format(column)


def _sum(expression):
    # CAST: PostgreSQL's SUM(bigint) is numeric (Decimal in Python); COALESCE: SUM of no rows.
    return "CAST(COALESCE(SUM(%s), 0) AS BIGINT)" % expression


def _count_if(condition):
    return _sum("CASE WHEN %s THEN 1 ELSE 0 END" % condition)


ITEM_COLUMNS = (
    ("items_total", "count(*)"),
    ("items_done", _count_if("status = 'SUCCEEDED'")),
    ("items_active", _count_if("status = 'ACTIVE'")),
    ("items_failed", _count_if("status = 'FAILED'")),
    ("items_partial", _count_if("status = 'PARTIAL'")),
    ("items_pending", _count_if("status = 'PENDING'")),
)
TASK_COLUMNS = (
    ("tasks", "count(*)"),
    ("tasks_succeeded", _count_if("status = 'SUCCEEDED'")),
    ("tasks_active", _count_if("status IN ('ACTIVE', 'INACTIVE')")),
    ("tasks_paused", _count_if("status IN ('ACTIVE', 'INACTIVE') AND is_paused = 1")),
    ("tasks_failed", _count_if("status = 'FAILED'")),
    ("tasks_inactive", _count_if("status = 'INACTIVE'")),
    ("tasks_lost", _count_if("status = 'LOST'")),
    ("bytes_transferred", _sum("bytes_transferred")),
    ("files_transferred", _sum("files_transferred")),
    ("files_skipped", _sum("files_skipped")),
    ("faults", _sum("faults")),
)
# Refused requests never got a task id, so they are counted apart from the submitted tasks.
REJECTED_COLUMNS = (("submissions_rejected", "count(*)"),)
ZERO_ROW = dict((name, 0) for name, _sql in ITEM_COLUMNS + TASK_COLUMNS + REJECTED_COLUMNS)
# The cards at the top of the page and the count columns of the totals tables.
CARDS = (("items_total", "items"), ("items_done", "items done"), ("items_active", "items active"),
         ("items_failed", "items failed"), ("items_partial", "items partial"), ("items_pending", "items pending"),
         ("tasks", "tasks"), ("tasks_active", "tasks active"), ("tasks_inactive", "tasks inactive"),
         ("tasks_paused", "tasks paused"),
         ("tasks_failed", "tasks failed"), ("tasks_lost", "tasks lost"), ("submissions_rejected", "requests rejected"),
         ("files_transferred", "files transferred"))
COUNT_COLUMNS = (("items_total", "items"), ("items_done", "done"), ("items_active", "active"),
                 ("items_failed", "failed"), ("items_partial", "partial"), ("items_pending", "pending"),
                 ("tasks", "tasks"), ("tasks_active", "tasks active"), ("tasks_failed", "tasks failed"))
# The states that wait for the operator: (count field, state, status label class, what it means
# and what to do). Shown per route, above everything else, whenever a count is not zero.
ATTENTION = (
    ("items_partial", "PARTIAL", "partial",
     "Items whose task succeeded but skipped files under them: the skipped files are not at the destination "
     "(listed under Failing items, and in routes.<name>.partial_items of globus_transfer). Fix the cause of the "
     "skips (each file's error code is in the item's last error); they are retried like FAILED items, and their sources are never "
     "deleted."),
    ("tasks_inactive", "INACTIVE", "inactive",
     "Tasks that lost their credentials or consent and hold the route's slot: run scidata.replication.globus_login "
     "again, with the collection in data_access_collections if it needs data_access consent; Globus resumes the "
     "task before its deadline."),
    ("tasks_paused", "PAUSED", "inactive",
     "Tasks held by a pause rule of a collection's administrators; they hold the route's slot. The message of the "
     "rule is shown with the task under Recent tasks: ask those administrators; Globus resumes the task when the rule "
     "is lifted."),
    ("tasks_lost", "LOST", "lost",
     "Tasks Globus no longer shows to these credentials (other credentials, or the task left the history): check "
     "that the jobs log in as the identity that submitted them. Their items became FAILED and are sent again with "
     "sync_level checksum."),
    ("submissions_rejected", "REJECTED", "rejected",
     "Requests Globus refused (the service's message is below): they are never sent again. Fix what the message "
     "names (path, collection, permission); their items became FAILED and are retried in new tasks until "
     "max_attempts."),
)


def iso(timestamp):
    """Epoch seconds as an ISO 8601 UTC string, or None."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(float(timestamp), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aggregate(db, table, columns, key=None, where=None):
    """One aggregate query: ``{key value: row}`` grouped by ``key``, or the single total row."""
    select = ", ".join("%s AS %s" % (sql, name) for name, sql in columns)
    sql = "SELECT %s%s FROM %s" % ("%s AS k, " % key if key else "", select, table)
    if where:
        sql += " WHERE " + where
    if key:
        sql += " GROUP BY %s" % key
        return dict((row.pop("k"), row) for row in db.query(sql))
    return db.query_one(sql)


def _merge(*groups):
    """Rows keyed by name from several aggregates, as one sorted list with every field."""
    names = set()
    for group in groups:
        names.update(group)
    rows = []
    for name in sorted(names, key=lambda n: (n is None, n or "")):
        row = dict(ZERO_ROW, name=name)
        for group in groups:
            row.update(group.get(name, {}))
        rows.append(row)
    return rows


# -- queries --------------------------------------------------------------------------------
def data_time(db):
    """The newest time recorded anywhere in the database (epoch seconds), None when empty."""
    row = db.query_one(
        "SELECT (SELECT MAX(updated_at) FROM globus_tasks) AS tasks, (SELECT MAX(time) FROM task_events) AS events, "
        "(SELECT MAX(updated_at) FROM transfer_items) AS items, (SELECT MAX(updated_at) FROM epns) AS epns, "
        "(SELECT MAX(COALESCE(ended_at, started_at)) FROM rsync_attempts) AS rsync, "
        "(SELECT MAX(updated_at) FROM sync_jobs) AS jobs")
    times = [float(v) for v in row.values() if v is not None]
    return max(times) if times else None


def summary(db, as_of, title):
    submitted, rejected = "task_id IS NOT NULL", "status = 'REJECTED'"
    totals = dict(ZERO_ROW)
    totals.update(_aggregate(db, "transfer_items", ITEM_COLUMNS))
    totals.update(_aggregate(db, "globus_tasks", TASK_COLUMNS, where=submitted))
    totals.update(_aggregate(db, "globus_tasks", REJECTED_COLUMNS, where=rejected))
    totals["epns"] = db.scalar("SELECT count(*) FROM epns")
    totals["epns_synced"] = db.scalar("SELECT count(*) FROM epns WHERE state = 'synced'")
    totals["jobs"] = db.scalar("SELECT count(*) FROM sync_jobs")
    routes = _merge(_aggregate(db, "transfer_items", ITEM_COLUMNS, key="route"),
                    _aggregate(db, "globus_tasks", TASK_COLUMNS, key="job", where=submitted),
                    _aggregate(db, "globus_tasks", REJECTED_COLUMNS, key="job", where=rejected))
    sites = _merge(_aggregate(db, "transfer_items", ITEM_COLUMNS, key="destination_collection"),
                   _aggregate(db, "globus_tasks", TASK_COLUMNS, key="destination_endpoint", where=submitted),
                   _aggregate(db, "globus_tasks", REJECTED_COLUMNS, key="destination_endpoint", where=rejected))
    return dict(format=FORMAT_VERSION, title=title, as_of=iso(as_of), totals=totals, routes=routes, sites=sites)


def _fatal_error(text):
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, dict):
        return ": ".join(str(value[k]) for k in ("code", "description") if value.get(k)) or text
    return text


def recent_tasks(db, limit, as_of):
    rows = db.query(
        "SELECT task_id, job, label, source_endpoint, destination_endpoint, status, nice_status, is_paused, pause_reason, files, "
        "files_transferred, files_skipped, bytes_transferred, effective_bytes_per_second, faults, request_time, "
        "completion_time, fatal_error FROM globus_tasks WHERE task_id IS NOT NULL "
        "ORDER BY COALESCE(request_time, submitted_at, created_at) DESC, id DESC LIMIT %d" % int(limit))
    for row in rows:
        row["is_paused"] = bool(row["is_paused"])
        row["request_time"] = iso(row["request_time"])
        row["completion_time"] = iso(row["completion_time"])
        row["fatal_error"] = _fatal_error(row["fatal_error"])
    total = db.scalar("SELECT count(*) FROM globus_tasks WHERE task_id IS NOT NULL")
    rejected = db.query(
        "SELECT submission_id, job, kind, label, source_endpoint, destination_endpoint, fatal_error, updated_at "
        "FROM globus_tasks WHERE status = 'REJECTED' ORDER BY updated_at DESC, id DESC LIMIT %d" % int(limit))
    for row in rejected:
        row["updated_at"] = iso(row["updated_at"])
        row["fatal_error"] = _fatal_error(row["fatal_error"])
    return dict(format=FORMAT_VERSION, as_of=iso(as_of), total=total, tasks=rows, rejected=rejected)


def failing_items(db, limit, as_of):
    """FAILED and PARTIAL items, newest first; a PARTIAL item with how many files its last task
    skipped under it (``task_files`` kind 'skipped'), its ``last_error`` naming the first ones."""
    # The LIMIT applies before the join: one count of skipped files per item shown.
    under = ("(f.source_path = i.source_path OR substr(f.source_path, 1, length(rtrim(i.source_path, '/')) + 1) "
             "= rtrim(i.source_path, '/') || '/')")
    rows = db.query(
        "SELECT i.route, i.status, i.source_collection, i.source_path, i.destination_collection, i.destination_path, "
        "i.attempts, i.next_attempt_at, i.last_error, i.updated_at, CASE WHEN i.status = 'PARTIAL' THEN "
        "(SELECT count(*) FROM globus_tasks t JOIN task_files f ON f.task_id = t.task_id AND f.kind = 'skipped' "
        "WHERE t.submission_id = i.submission_id AND %s) END AS files_skipped "
        "FROM (SELECT * FROM transfer_items WHERE status IN ('FAILED', 'PARTIAL') "
        "ORDER BY updated_at DESC, id DESC LIMIT %d) i ORDER BY i.updated_at DESC, i.id DESC" % (under, int(limit)))
    for row in rows:
        row["next_attempt_at"] = iso(row["next_attempt_at"])
        row["updated_at"] = iso(row["updated_at"])
    counts = db.query_one("SELECT count(*) AS total, %s AS partial FROM transfer_items WHERE status IN ('FAILED', 'PARTIAL')"
                          % _count_if("status = 'PARTIAL'"))
    return dict(format=FORMAT_VERSION, as_of=iso(as_of), total=counts["total"], partial=counts["partial"], items=rows)


def epn_status(db, limit, as_of, window_start):
    by_state = db.query(
        "SELECT state, count(*) AS epns, %s AS bytes_transferred, MAX(last_synced_at) AS last_synced_at "
        "FROM epns GROUP BY state ORDER BY state" % _sum("bytes_transferred"))
    for row in by_state:
        row["last_synced_at"] = iso(row["last_synced_at"])
    order = "CASE state %s ELSE %d END" % (
        " ".join("WHEN '%s' THEN %d" % (s, n) for n, s in enumerate(EPN_STATE_ORDER)), len(EPN_STATE_ORDER))
    # The LIMIT applies before the join: one last-attempt lookup per EPN shown, not per EPN.
    rows = db.query(
        "SELECT e.epn, e.beamline, e.project, e.state, e.attempts, e.last_rc, e.bytes_transferred, e.last_synced_at, "
        "a.started_at AS last_attempt_at, a.ended_at AS last_attempt_ended_at, a.rc AS last_attempt_rc, "
        "a.bytes AS last_attempt_bytes, a.files AS last_attempt_files, a.stderr_tail AS last_attempt_stderr "
        "FROM (SELECT epn, beamline, project, state, attempts, last_rc, bytes_transferred, last_synced_at, "
        "updated_at, %s AS o FROM epns ORDER BY o, updated_at DESC, epn LIMIT %d) e "
        "LEFT JOIN rsync_attempts a ON a.id = (SELECT MAX(r.id) FROM rsync_attempts r WHERE r.epn = e.epn) "
        "ORDER BY e.o, e.updated_at DESC, e.epn" % (order, int(limit)))
    for row in rows:
        for name in ("last_synced_at", "last_attempt_at", "last_attempt_ended_at"):
            row[name] = iso(row[name])
        if row["last_attempt_stderr"] and len(row["last_attempt_stderr"]) > STDERR_SHOWN:
            row["last_attempt_stderr"] = "…" + row["last_attempt_stderr"][-STDERR_SHOWN:]
    last = db.query_one("SELECT epn, host, started_at, ended_at, rc, bytes, files FROM rsync_attempts "
                        "ORDER BY started_at DESC, id DESC LIMIT 1")
    if last:
        last["started_at"] = iso(last["started_at"])
        last["ended_at"] = iso(last["ended_at"])
    window = db.query_one(
        "SELECT count(*) AS attempts, %s AS succeeded, %s AS failed, %s AS running, %s AS bytes "
        "FROM rsync_attempts WHERE started_at >= ?"
        % (_count_if("rc = 0"), _count_if("rc <> 0"), _count_if("rc IS NULL"), _sum("bytes")), (window_start,))
    return dict(format=FORMAT_VERSION, as_of=iso(as_of), total=sum(r["epns"] for r in by_state), by_state=by_state,
                last_attempt=last, attempts_in_window=window, epns=rows)


def sync_jobs(db, as_of):
    rows = db.query("SELECT name, kind, source, last_run_at, last_scan_at, files_indexed, files_pending, "
                    "last_result FROM sync_jobs ORDER BY name")
    for row in rows:
        row["last_run_at"] = iso(row["last_run_at"])
        row["last_scan_at"] = iso(row["last_scan_at"])
        try:
            row["last_result"] = json.loads(row["last_result"]) if row["last_result"] else None
        except ValueError:
            pass  # shown as the text it is
    return dict(format=FORMAT_VERSION, as_of=iso(as_of), jobs=rows)


def progress(db, as_of, history_hours):
    """Hourly series over the window ending with the hour of ``as_of``.

    Bytes per route come from PROGRESS events; a finished task without any PROGRESS event
    counts its ``bytes_transferred`` in the hour it completed. Active tasks per hour come from
    per-hour counts of starts and ends (a running sum over the hours, not over tasks).
    """
    if as_of is None:
        return dict(format=FORMAT_VERSION, as_of=None, hours=[], bytes_per_route={}, tasks_active=[],
                    tasks_failed=[], error_events=[])
    last = int(as_of // 3600)
    first = last - history_hours + 1
    start, end = first * 3600.0, (last + 1) * 3600.0
    event_hour, done_hour = hour_bucket(db, "time"), hour_bucket(db, "t.completion_time")
    # One pass over the window's events, grouped by task and hour first (a small join after).
    rows = db.query(
        "SELECT route, hour, %s AS bytes, %s AS errors FROM ("
        " SELECT t.job AS route, x.hour AS hour, x.bytes AS bytes, x.errors AS errors FROM ("
        "  SELECT task_id, %s AS hour, SUM(CASE WHEN code = 'PROGRESS' AND bytes > 0 THEN bytes ELSE 0 END) AS bytes,"
        "  SUM(CASE WHEN is_error = 1 THEN 1 ELSE 0 END) AS errors FROM task_events"
        "  WHERE time >= ? AND time < ? AND (code = 'PROGRESS' OR is_error = 1) GROUP BY task_id, %s) x"
        " JOIN globus_tasks t ON t.task_id = x.task_id"
        " UNION ALL"
        " SELECT t.job AS route, %s AS hour, t.bytes_transferred AS bytes, 0 AS errors FROM globus_tasks t"
        " WHERE t.completion_time >= ? AND t.completion_time < ? AND t.bytes_transferred > 0"
        " AND NOT EXISTS (SELECT 1 FROM task_events e WHERE e.task_id = t.task_id AND e.code = 'PROGRESS')"
        ") u GROUP BY route, hour ORDER BY route, hour"
        % (_sum("bytes"), _sum("errors"), event_hour, event_hour, done_hour), (start, end, start, end))
    hours = list(range(first, last + 1))
    bytes_per_route, errors = {}, [0] * len(hours)
    for row in rows:  # one row per (route, hour): bounded by routes x history_hours
        index = row["hour"] - first
        errors[index] += row["errors"]
        if row["bytes"]:
            bytes_per_route.setdefault(row["route"], [0] * len(hours))[index] = row["bytes"]

    begin = "COALESCE(request_time, submitted_at, created_at)"
    # A LOST task ended when it was marked LOST (its updated_at): it runs no more and holds no slot.
    finish = "CASE WHEN status IN ('SUCCEEDED', 'FAILED', 'LOST') THEN COALESCE(completion_time, updated_at) END"
    # A task is active in the hours from its start hour to its end hour, both included. Starts
    # before the window count in its first hour; ends are counted in the hour after the end.
    started = dict((r["hour"], r["n"]) for r in db.query(
        "SELECT CASE WHEN b < ? THEN ? ELSE b END AS hour, count(*) AS n FROM ("
        "SELECT %s AS b FROM globus_tasks WHERE task_id IS NOT NULL AND %s < ?) s GROUP BY 1"
        % (hour_bucket(db, begin), begin), (first, first, end)))
    ended = dict((r["hour"], r["n"]) for r in db.query(
        "SELECT CASE WHEN b < ? THEN ? ELSE b END AS hour, count(*) AS n FROM ("
        "SELECT %s + 1 AS b FROM globus_tasks WHERE task_id IS NOT NULL AND %s < ? AND (%s) < ?) s GROUP BY 1"
        % (hour_bucket(db, finish), begin, finish), (first, first, end, end)))
    failed = dict((r["hour"], r["n"]) for r in db.query(
        "SELECT %s AS hour, count(*) AS n FROM globus_tasks t WHERE status = 'FAILED' "
        "AND t.completion_time >= ? AND t.completion_time < ? GROUP BY 1" % done_hour, (start, end)))
    active, running = [], 0
    for hour in hours:
        running += started.get(hour, 0) - ended.get(hour, 0)
        active.append(running)
    return dict(format=FORMAT_VERSION, as_of=iso(as_of), hours=[iso(h * 3600) for h in hours],
                bytes_per_route=bytes_per_route, tasks_active=active,
                tasks_failed=[failed.get(h, 0) for h in hours], error_events=errors)


def collect(db, title="Replication status", recent=50, history_hours=48, max_rows=200):
    """Everything the site shows, as the JSON-ready datasets of its files."""
    if history_hours < 1 or recent < 0 or max_rows < 0:
        raise ConfigError("history_hours must be at least 1; recent_tasks and max_rows must not be negative")
    as_of = data_time(db)
    window_start = (int(as_of // 3600) - history_hours + 1) * 3600.0 if as_of is not None else 0.0
    return {
        "summary.json": summary(db, as_of, title),
        "tasks.json": recent_tasks(db, recent, as_of),
        "progress.json": progress(db, as_of, history_hours),
        "items_failing.json": failing_items(db, max_rows, as_of),
        "epns.json": epn_status(db, max_rows, as_of, window_start),
        "jobs.json": sync_jobs(db, as_of),
    }


# -- charts ---------------------------------------------------------------------------------
def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import dates, ticker
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingLibraryError("matplotlib", "matplotlib", reason="to draw the dashboard charts", exception=exc)
    return matplotlib, Figure, dates, ticker


def _chart_routes(bytes_per_route):
    """The biggest routes by bytes, then one 'other' series for the rest."""
    ranked = sorted(bytes_per_route.items(), key=lambda kv: (-sum(kv[1]), kv[0] or ""))
    shown = ranked[:CHART_ROUTES]
    rest = ranked[CHART_ROUTES:]
    if rest:
        shown.append(("%d other routes" % len(rest), [sum(v) for v in zip(*[series for _name, series in rest])]))
    return [(name if name is not None else "(none)", series) for name, series in shown]


def _svg(figure, name, matplotlib):
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "scidata.replication." + name}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # inline in HTML: no XML declaration or DOCTYPE


def render_charts(progress_data):
    """``{"bytes": svg, "tasks": svg}``: inline SVG, byte-identical for identical data."""
    matplotlib, figure_class, dates, ticker = _matplotlib()
    hours = [datetime.datetime.strptime(h, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
             for h in progress_data["hours"]]
    style = {
        "svg.fonttype": "none",  # real <text>, escaped by matplotlib; no glyph paths
        "text.parse_math": False,  # route names are data, not mathtext
        "timezone": "UTC",
        "font.size": 9,
        "font.family": "DejaVu Sans",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "axes.grid.axis": "y",
        "grid.alpha": 0.35,
        "legend.frameon": False,
    }
    charts = {}
    with matplotlib.rc_context(style):
        for name in ("bytes", "tasks"):
            figure = figure_class(figsize=(10, 3.4), layout="constrained")
            axes = figure.add_subplot()
            if not hours:
                axes.text(0.5, 0.5, "No data yet", transform=axes.transAxes, ha="center", va="center")
                axes.set_xticks([])
                axes.set_yticks([])
            elif name == "bytes":
                _bytes_chart(axes, hours, progress_data, dates, ticker)
            else:
                _tasks_chart(axes, hours, progress_data, dates, ticker)
            charts[name] = _svg(figure, name, matplotlib)
    return charts


def _time_axis(axes, dates):
    locator = dates.AutoDateLocator(tz=datetime.timezone.utc, maxticks=10)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator, tz=datetime.timezone.utc))


def _legend(axes, handles, labels):
    """Above the plot, in one row when it fits (constrained layout makes room for it)."""
    # matplotlib before 3.10 drops a label starting with "_" even when given explicitly; a
    # zero-width space in front keeps a route of that name in the legend on every version.
    labels = ["\u200b" + label if label.startswith("_") else label for label in labels]
    axes.legend(handles, labels, loc="lower left", bbox_to_anchor=(0, 1.02), borderaxespad=0, fontsize=8,
                ncol=min(len(labels), 5))


def _bytes_chart(axes, hours, data, dates, ticker):
    series = _chart_routes(data["bytes_per_route"])
    # Stacked steps (one polygon per route, however many hours) rather than one bar per hour.
    edges = hours + [hours[-1] + datetime.timedelta(hours=1)]
    if series:
        areas = axes.stackplot(edges, *[values + values[-1:] for _label, values in series], step="post",
                               linewidth=0)
        # Explicit labels: matplotlib would drop a label starting with "_" from an automatic legend.
        _legend(axes, areas, [label for label, _values in series])
    else:
        axes.text(0.5, 0.5, "No bytes transferred in this period", transform=axes.transAxes, ha="center",
                  va="center")
    axes.set_xlim(edges[0], edges[-1])
    axes.set_ylim(bottom=0)
    axes.set_ylabel("bytes per hour")
    axes.yaxis.set_major_formatter(ticker.EngFormatter(unit="B"))
    _time_axis(axes, dates)


def _tasks_chart(axes, hours, data, dates, ticker):
    edges = hours + [hours[-1] + datetime.timedelta(hours=1)]
    failed = [(hour, count) for hour, count in zip(hours, data["tasks_failed"]) if count]
    axes.bar([hour for hour, _count in failed], [count for _hour, count in failed],
             width=datetime.timedelta(minutes=54), align="edge", color="#d62728", alpha=0.8)
    active = axes.step(edges, data["tasks_active"] + data["tasks_active"][-1:], where="post", color="#1f77b4",
                       linewidth=1.8)[0]
    errors = axes.step(edges, data["error_events"] + data["error_events"][-1:], where="post", color="#ff7f0e",
                       linewidth=1.2, linestyle="--")[0]
    failed_handle = axes.fill_between([], [], color="#d62728", alpha=0.8)  # legend entry even with no bar
    axes.set_xlim(edges[0], edges[-1])
    axes.set_ylim(bottom=0)
    axes.set_ylabel("tasks / events per hour")
    axes.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    _legend(axes, [active, failed_handle, errors], ["active tasks", "tasks failed", "error events"])
    _time_axis(axes, dates)


# -- HTML -----------------------------------------------------------------------------------
def _human_bytes(value, suffix="B"):
    if value is None:
        return "–"
    value = float(value)
    for unit in ("", "k", "M", "G", "T", "P"):
        if abs(value) < 1000 or unit == "P":
            return ("%d %s%s" if unit == "" else "%.1f %s%s") % (value, unit, suffix)
        value /= 1000.0
    return None  # not reached


def _human_rate(value):
    return "–" if not value else _human_bytes(value, "B/s")


def _number(value):
    return "–" if value is None else "{:,}".format(value)


def _when(value):
    return "–" if not value else value.replace("T", " ").replace("Z", "")


def _status_class(status):
    status = (status or "").upper()
    return status.lower() if status in KNOWN_STATUSES else "other"


def _compact(value):
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _path_segment(value):
    return quote(str(value), safe="")


def _jinja():
    try:
        import jinja2
        from markupsafe import Markup
    except ImportError as exc:
        raise MissingLibraryError("jinja2", "jinja2", reason="to render the dashboard", exception=exc)
    return jinja2, Markup


def attention_rows(summary_data):
    """One group per ATTENTION state some route has: its label, action and ``[(route, count)]``."""
    groups = []
    for field, state, css, action in ATTENTION:
        routes = [(row["name"], row[field]) for row in summary_data["routes"] if row[field]]
        if routes:
            groups.append(dict(field=field, state=state, css=css, action=action, routes=routes))
    return groups


def render_html(data, charts, globus_app_url=DEFAULT_GLOBUS_APP_URL):
    jinja2, markup = _jinja()
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                     lstrip_blocks=True, keep_trailing_newline=True)
    environment.filters.update(bytes=_human_bytes, rate=_human_rate, number=_number, when=_when,
                               status_class=_status_class, compact=_compact, path_segment=_path_segment)
    template = environment.from_string(INDEX_TEMPLATE)
    return template.render(
        summary=data["summary.json"], tasks=data["tasks.json"], progress=data["progress.json"],
        failing=data["items_failing.json"], epns=data["epns.json"], jobs=data["jobs.json"],
        # matplotlib escapes every text it writes into the SVG; the SVG itself is trusted markup.
        charts=dict((k, markup(v)) for k, v in charts.items()),
        task_url=task_url_prefix(globus_app_url), state_order=EPN_STATE_ORDER, cards=CARDS,
        count_columns=COUNT_COLUMNS, attention=attention_rows(data["summary.json"]),
        attention_fields=[entry[0] for entry in ATTENTION],
    )


def task_url_prefix(globus_app_url):
    """``https://app.globus.org/activity/`` from the web app URL (http or https only)."""
    url = (globus_app_url or DEFAULT_GLOBUS_APP_URL).rstrip("/")
    if not url.startswith(("https://", "http://")) or any(c in url for c in "\"'<> \t\r\n"):
        raise ConfigError("globus_app_url must be an http:// or https:// URL, got %r" % globus_app_url)
    return url + "/activity/"


def render_site(data, globus_app_url=DEFAULT_GLOBUS_APP_URL):
    """``{file name: bytes}`` of the whole site."""
    files = {}
    for name in SITE_FILES:
        if name.endswith(".json"):
            files[name] = (json.dumps(data[name], indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    files["index.html"] = render_html(data, render_charts(data["progress.json"]), globus_app_url).encode("utf-8")
    return files


# -- publishing -----------------------------------------------------------------------------
def _generation_prefix(dest):
    return ".%s.gen-" % os.path.basename(dest)


def read_site(dest):
    """``{file name: bytes}`` of the site currently at ``dest``; None when there is none."""
    if not os.path.lexists(dest):
        return None
    if not os.path.isdir(dest):
        if os.path.islink(dest):
            return None  # a dangling link: replaced by the next publish
        raise ConfigError("dest %s exists and is not a directory" % dest)
    files = {}
    for name in sorted(os.listdir(dest)):
        path = os.path.join(dest, name)
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                files[name] = handle.read()
        else:
            files[name] = None  # something else: never equal to a rendered file
    return files


def changed_files(before, files):
    """Names whose content differs (new, changed, or present only in the old site)."""
    before = before or {}
    names = set(before) | set(files)
    return sorted(n for n in names if before.get(n) != files.get(n))


def _fsync_directory(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_site(dest, files):
    """Write ``files`` as a new generation next to ``dest`` and swap it in atomically.

    ``dest`` is a symbolic link to a sibling directory ``.<name>.gen-XXXX``. The new generation
    is written and synced completely, then a new link is renamed over ``dest`` (one atomic
    rename(2)), so a web server serving ``dest`` sees the old site or the new one, never a mix
    inside one file and never a missing directory. The previous generation is kept until the
    swap and removed after it. Returns the path of the new generation.
    """
    dest = os.path.abspath(dest)
    parent, name = os.path.split(dest)
    prefix = _generation_prefix(dest)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755)
    if os.path.isdir(dest) and not os.path.islink(dest):
        if os.listdir(dest):
            raise ConfigError(
                "dest %s is a directory with files this module did not write; it publishes through a symbolic "
                "link it manages: remove the directory (or choose another dest)" % dest)
        os.rmdir(dest)  # an empty directory (for example made by a provisioning role) serves nothing
    elif os.path.lexists(dest) and not os.path.islink(dest):
        raise ConfigError("dest %s exists and is not a directory" % dest)
    generation = tempfile.mkdtemp(prefix=prefix, dir=parent)
    link = os.path.join(parent, ".%s.link-%s" % (name, uuid.uuid4().hex))
    try:
        for file_name, content in sorted(files.items()):
            path = os.path.join(generation, file_name)
            with open(path, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(path, 0o644)
        os.chmod(generation, 0o755)  # mkdtemp makes it 0700; the web server must read it
        _fsync_directory(generation)
        os.symlink(os.path.basename(generation), link)
        os.replace(link, dest)
        _fsync_directory(parent)
    except BaseException:
        shutil.rmtree(generation, ignore_errors=True)
        if os.path.lexists(link):
            os.unlink(link)
        raise
    # Older generations (and leftovers of interrupted runs) of this dest only; a directory the
    # link pointed to that this module did not make is never touched.
    for entry in os.listdir(parent):
        path = os.path.join(parent, entry)
        if entry.startswith(prefix) and path != generation and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif entry.startswith(".%s.link-" % name) and os.path.islink(path):
            os.unlink(path)
    return generation


INDEX_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>{{ summary.title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 0; color: #1d2733; background: #f4f6f9; font-size: 14px; }
header { background: #1d3557; color: #fff; padding: 14px 24px; }
header h1 { margin: 0; font-size: 22px; }
header p { margin: 4px 0 0; opacity: .85; }
nav a { color: #cfe0ff; margin-right: 14px; text-decoration: none; }
main { padding: 8px 24px 32px; max-width: 1400px; }
section { background: #fff; border-radius: 6px; padding: 12px 16px; margin: 14px 0; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { font-size: 17px; margin: 4px 0 10px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #fff; border-radius: 6px; padding: 10px 14px; min-width: 130px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.card .v { font-size: 22px; font-weight: 600; }
.card .l { font-size: 12px; color: #5a6878; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e3e7ed; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.t { white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid #c5ccd6; }
.s { display: inline-block; padding: 1px 6px; border-radius: 3px; font-size: 12px; background: #e3e7ed; }
.s.succeeded, .s.synced { background: #d4f0dc; color: #185c2c; }
.s.active, .s.pending, .s.retry { background: #dbe8fb; color: #173f7a; }
.s.inactive, .s.partial { background: #fff0c2; color: #6b4e00; }
.s.failed, .s.lost, .s.rejected { background: #fbd9d7; color: #86201a; }
.card.warn { background: #fff4d6; box-shadow: inset 4px 0 0 #d08a00, 0 1px 2px rgba(0,0,0,.08); }
#attention { border-left: 4px solid #d08a00; }
#attention td.action { max-width: 640px; }
.err, pre { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; margin: 0; }
.muted { color: #5a6878; }
.chart svg { width: 100%; height: auto; max-width: 1100px; }
.id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
footer { padding: 0 24px 24px; color: #5a6878; font-size: 12px; }
</style>
</head>
<body>
<header>
<h1>{{ summary.title }}</h1>
<p>Data as of {{ summary.as_of | when }}{% if summary.as_of %} UTC{% endif %} &middot;
charts cover the last {{ progress.hours | length }} hours of recorded data</p>
<nav>
{% if attention %}<a href="#attention">Needs attention</a>{% endif %}
<a href="#routes">Routes</a> <a href="#sites">Sites</a> <a href="#charts">Charts</a> <a href="#tasks">Recent tasks</a>
<a href="#failing">Failing items</a> <a href="#epns">EPNs</a> <a href="#jobs">Sync jobs</a>
</nav>
</header>
<main>
{% set t = summary.totals %}
<div class="cards" id="totals">
{% for key, label in cards %}
<div class="card{% if key in attention_fields and t[key] %} warn{% endif %}">
<div class="v" data-total="{{ key }}" data-value="{{ t[key] }}">{{ t[key] | number }}</div><div class="l">{{ label }}</div>
</div>
{% endfor %}
<div class="card">
<div class="v" data-total="bytes_transferred" data-value="{{ t.bytes_transferred }}">{{ t.bytes_transferred | bytes }}</div>
<div class="l">bytes transferred</div>
</div>
<div class="card">
<div class="v" data-total="epns_synced" data-value="{{ t.epns_synced }}">{{ t.epns_synced | number }} / {{ t.epns | number }}</div>
<div class="l">EPNs synced</div>
</div>
</div>

{% if attention %}
<section id="attention">
<h2>Needs attention</h2>
<table>
<thead><tr><th>state</th><th>route / job</th><th class="n">count</th><th>what it means, what to do</th></tr></thead>
<tbody>
{% for g in attention %}
{% for name, count in g.routes %}
<tr data-attention="{{ g.state }}" data-route="{{ name if name is not none else '' }}" data-count="{{ count }}">
{% if loop.first %}<td rowspan="{{ g.routes | length }}"><span class="s {{ g.css }}">{{ g.state }}</span></td>{% endif %}
<td class="id">{{ name if name is not none else "(none)" }}</td>
<td class="n">{{ count | number }}</td>
{% if loop.first %}<td class="action" rowspan="{{ g.routes | length }}">{{ g.action }}</td>{% endif %}
</tr>
{% endfor %}
{% endfor %}
</tbody>
</table>
{% if tasks.rejected %}
<h2>Rejected requests <span class="muted">({{ tasks.rejected | length }} of {{ t.submissions_rejected | number }})</span></h2>
<table>
<thead><tr><th>submission</th><th>route / job</th><th>kind</th><th>label</th><th>rejected</th><th>message of the service</th></tr></thead>
<tbody>
{% for r in tasks.rejected %}
<tr data-rejected="{{ r.submission_id }}">
<td class="id">{{ r.submission_id[:8] }}</td><td>{{ r.job }}</td><td>{{ r.kind }}</td><td>{{ r.label or "" }}</td>
<td class="t">{{ r.updated_at | when }}</td><td><div class="err">{{ r.fatal_error or "" }}</div></td>
</tr>
{% endfor %}
</tbody>
</table>
{% endif %}
</section>
{% endif %}

{% macro totals_table(id, heading, first, rows, totals) %}
<section id="{{ id }}">
<h2>{{ heading }}</h2>
{% if rows %}
<table>
<thead><tr><th>{{ first }}</th>
{% for f, label in count_columns %}<th class="n">{{ label }}</th>{% endfor %}
<th class="n">bytes</th><th class="n">files</th><th class="n">faults</th></tr></thead>
<tbody>
{% for r in rows %}
<tr data-row="{{ r.name }}">
<td class="id">{{ r.name if r.name is not none else "(none)" }}</td>
{% for f, label in count_columns %}
<td class="n" data-field="{{ f }}" data-value="{{ r[f] }}">{{ r[f] | number }}</td>
{% endfor %}
<td class="n" data-field="bytes_transferred" data-value="{{ r.bytes_transferred }}"
    title="{{ r.bytes_transferred | number }} bytes">{{ r.bytes_transferred | bytes }}</td>
<td class="n" data-field="files_transferred" data-value="{{ r.files_transferred }}">{{ r.files_transferred | number }}</td>
<td class="n" data-field="faults" data-value="{{ r.faults }}">{{ r.faults | number }}</td>
</tr>
{% endfor %}
<tr class="total"><td>all</td>
{% for f, label in count_columns %}
<td class="n">{{ totals[f] | number }}</td>
{% endfor %}
<td class="n">{{ totals.bytes_transferred | bytes }}</td>
<td class="n">{{ totals.files_transferred | number }}</td>
<td class="n">{{ totals.faults | number }}</td></tr>
</tbody>
</table>
{% else %}
<p class="muted">Nothing recorded yet.</p>
{% endif %}
</section>
{% endmacro %}
{{ totals_table("routes", "Routes and jobs", "route / job", summary.routes, t) }}
{{ totals_table("sites", "Destination sites", "destination collection", summary.sites, t) }}

<section id="charts">
<h2>Bytes transferred per hour, per route</h2>
<div class="chart" id="chart-bytes" role="img" aria-label="Bytes transferred per hour, per route">{{ charts.bytes }}</div>
<h2>Active and failed tasks per hour</h2>
<div class="chart" id="chart-tasks" role="img" aria-label="Active and failed tasks per hour">{{ charts.tasks }}</div>
</section>

<section id="tasks">
<h2>Recent tasks <span class="muted">({{ tasks.tasks | length }} of {{ tasks.total | number }})</span></h2>
{% if tasks.tasks %}
<table>
<thead><tr><th>task</th><th>route / job</th><th>label</th><th>status</th><th class="n">files</th><th class="n">bytes</th>
<th class="n">rate</th><th class="n">faults</th><th>requested</th><th>completed</th></tr></thead>
<tbody>
{% for k in tasks.tasks %}
<tr data-task="{{ k.task_id }}">
<td class="id"><a href="{{ task_url }}{{ k.task_id | path_segment }}" rel="noopener noreferrer">{{ k.task_id[:8] }}</a></td>
<td>{{ k.job }}</td>
<td>{{ k.label or "" }}</td>
<td><span class="s {{ k.status | status_class }}">{{ k.status }}</span>
{% if k.is_paused %} <span class="s inactive">paused</span>
{% if k.pause_reason %}<div class="err" data-pause-reason="{{ k.task_id }}">{{ k.pause_reason }}</div>{% endif %}
{% endif %}
{% if k.nice_status and k.nice_status not in ("OK", "Queued") and k.status != "SUCCEEDED" %}
 <span class="muted">{{ k.nice_status }}</span>
{% endif %}
{% if k.fatal_error %}<div class="err">{{ k.fatal_error }}</div>{% endif %}
</td>
<td class="n">{{ k.files_transferred | number }} / {{ k.files | number }}</td>
<td class="n">{{ k.bytes_transferred | bytes }}</td>
<td class="n">{{ k.effective_bytes_per_second | rate }}</td>
<td class="n">{{ k.faults | number }}</td>
<td class="t">{{ k.request_time | when }}</td>
<td class="t">{{ k.completion_time | when }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="muted">No task submitted yet.</p>
{% endif %}
</section>

<section id="failing">
<h2>Failing items
<span class="muted" data-total="failing" data-value="{{ failing.total }}">({{ failing["items"] | length }} of {{ failing.total | number }},
<span data-total="partial" data-value="{{ failing.partial }}">{{ failing.partial | number }} PARTIAL</span>)</span></h2>
{% if failing["items"] %}
<table>
<thead><tr><th>route</th><th>status</th><th>source path</th><th>destination</th><th class="n">attempts</th><th class="n">files skipped</th>
<th>next attempt</th><th>last error</th></tr></thead>
<tbody>
{% for i in failing["items"] %}
<tr data-item-status="{{ i.status }}">
<td class="t">{{ i.route }}</td>
<td><span class="s {{ i.status | status_class }}">{{ i.status }}</span></td>
<td class="id">{{ i.source_path }}</td>
<td class="id">{{ i.destination_path }}</td>
<td class="n">{{ i.attempts | number }}</td>
<td class="n" data-field="files_skipped" data-value="{{ i.files_skipped }}">{{ i.files_skipped | number }}</td>
<td class="t">{{ i.next_attempt_at | when }}</td>
<td><div class="err">{{ i.last_error or "" }}</div></td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="muted">No failing item.</p>
{% endif %}
</section>

<section id="epns">
<h2>EPN synchronisation</h2>
{% if epns.by_state %}
<table>
<thead><tr><th>state</th><th class="n">EPNs</th><th class="n">bytes</th><th>last synced</th></tr></thead>
<tbody>
{% for s in epns.by_state %}
<tr data-epn-state="{{ s.state }}">
<td><span class="s {{ s.state if s.state in state_order else 'other' }}">{{ s.state }}</span></td>
<td class="n" data-value="{{ s.epns }}">{{ s.epns | number }}</td>
<td class="n">{{ s.bytes_transferred | bytes }}</td>
<td class="t">{{ s.last_synced_at | when }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% set w = epns.attempts_in_window %}
<p>rsync attempts in the charted period: {{ w.attempts | number }} ({{ w.succeeded | number }} succeeded,
{{ w.failed | number }} failed, {{ w.running | number }} unfinished), {{ w.bytes | bytes }}.
{% if epns.last_attempt %}
{% set a = epns.last_attempt %}
Last attempt: EPN <span class="id">{{ a.epn }}</span> started {{ a.started_at | when }},
{% if a.rc is none %}not finished{% else %}exit code {{ a.rc }}{% endif %}.
{% endif %}
</p>
<table>
<thead><tr><th>EPN</th><th>beamline</th><th>project</th><th>state</th><th class="n">attempts</th><th class="n">bytes</th>
<th>last synced</th><th>last rsync</th></tr></thead>
<tbody>
{% for e in epns.epns %}
<tr>
<td class="id">{{ e.epn }}</td><td>{{ e.beamline or "" }}</td><td>{{ e.project or "" }}</td>
<td><span class="s {{ e.state if e.state in state_order else 'other' }}">{{ e.state }}</span></td>
<td class="n">{{ e.attempts | number }}</td><td class="n">{{ e.bytes_transferred | bytes }}</td>
<td class="t">{{ e.last_synced_at | when }}</td>
<td>
{% if e.last_attempt_at %}
{{ e.last_attempt_at | when }}: {% if e.last_attempt_rc is none %}running{% else %}rc {{ e.last_attempt_rc }}{% endif %}
{% if e.last_attempt_stderr and e.last_attempt_rc %}<pre>{{ e.last_attempt_stderr }}</pre>{% endif %}
{% else %}–{% endif %}
</td>
</tr>
{% endfor %}
</tbody>
</table>
{% if epns.epns | length < epns.total %}
<p class="muted">{{ epns.epns | length }} of {{ epns.total | number }} EPNs shown (failed first).</p>
{% endif %}
{% else %}
<p class="muted">No EPN recorded.</p>
{% endif %}
</section>

<section id="jobs">
<h2>Directory sync jobs</h2>
{% if jobs.jobs %}
<table>
<thead><tr><th>job</th><th>kind</th><th>source</th><th>last run</th><th>last scan</th><th class="n">files indexed</th>
<th class="n">files pending</th><th>last result</th></tr></thead>
<tbody>
{% for j in jobs.jobs %}
<tr data-job="{{ j.name }}">
<td>{{ j.name }}</td><td>{{ j.kind }}</td><td class="id">{{ j.source or "" }}</td>
<td class="t">{{ j.last_run_at | when }}</td><td class="t">{{ j.last_scan_at | when }}</td>
<td class="n">{{ j.files_indexed | number }}</td>
<td class="n" data-field="files_pending" data-value="{{ j.files_pending }}">{{ j.files_pending | number }}</td>
<td><div class="err">{{ j.last_result | compact | truncate(400) }}</div></td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="muted">No sync job recorded.</p>
{% endif %}
</section>
</main>
<footer>
Generated by scidata.replication.replication_report from the state database. The same data as JSON:
<a href="summary.json">summary.json</a>, <a href="tasks.json">tasks.json</a>, <a href="progress.json">progress.json</a>,
<a href="items_failing.json">items_failing.json</a>, <a href="epns.json">epns.json</a>, <a href="jobs.json">jobs.json</a>.
</footer>
</body>
</html>
"""
