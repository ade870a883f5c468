# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The dashboard of a large SQLite state database: 1M task events and 100k items.

Run from the collection layout:

  cd "$(bash tests/harness/layout.sh)" && /work/main/.venv/bin/python benchmarks/replication_report.py

Fills a throwaway SQLite database (10k tasks on 4 routes, 100 PROGRESS/error events each spread
over 30 days, 100k items), then times the whole report (queries, matplotlib charts, Jinja page,
JSON, atomic publish) side by side with baselines measured in the same run on the same file:
``SELECT count(*) FROM task_events`` and one full pass over the rows (``SUM(bytes)``).

Goal: the report in <= 5 s with the default 48 h of history; also shown with 720 h (every
event inside the charted window).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(HERE))))]

from ansible_collections.scidata.replication.plugins.module_utils import _report  # noqa: E402
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state  # noqa: E402

ROUTES = ["llnl-alcf", "llnl-olcf", "alcf-olcf", "olcf-alcf"]
DAYS = 30
CHUNK = 50000


def fill(db, events, items, tasks):
    rng = random.Random(8)
    end = 1777593600.0
    start = end - DAYS * 86400
    per_task = events // tasks
    task_rows, event_rows = [], []
    for n in range(tasks):
        begin = start + (end - start - 7200) * n / tasks
        status = "SUCCEEDED" if n % 10 else rng.choice(["FAILED", "ACTIVE", "INACTIVE"])
        task_id = "%08x-0000-4000-8000-%012d" % (n * 7919, n)
        task_rows.append(dict(
            submission_id="s%d" % n, task_id=task_id, job=ROUTES[n % len(ROUTES)], label="batch %d" % n,
            source_endpoint="src", destination_endpoint="dst%d" % (n % 3), request="{}", status=status,
            is_paused=1 if status == "INACTIVE" else 0, files=100, files_transferred=100, bytes_transferred=10 ** 10,
            effective_bytes_per_second=10 ** 8, faults=n % 4, request_time=begin,
            completion_time=begin + 7000 if status in ("SUCCEEDED", "FAILED") else None, created_at=begin,
            submitted_at=begin, updated_at=begin + 7000))
        for e in range(per_task):
            error = e % 25 == 0
            event_rows.append(dict(task_id=task_id, time=begin + 70 * e, code="CONNECTION_RESET" if error else "PROGRESS",
                                   is_error=1 if error else 0, description="progress", details="{}",
                                   bytes=None if error else 10 ** 8, mbps=800.0, duration=60.0,
                                   fingerprint="%d-%d" % (n, e)))
        if len(event_rows) >= CHUNK or n == tasks - 1:
            if task_rows:
                db.upsert("globus_tasks", task_rows, key=["submission_id"])
                task_rows = []
            db.upsert("task_events", event_rows, key=["task_id", "fingerprint"])
            event_rows = []
    statuses = ["SUCCEEDED"] * 7 + ["PENDING", "ACTIVE", "FAILED"]
    item_rows = [dict(route=ROUTES[i % len(ROUTES)], source_collection="src", source_path="/data/%08d/" % i,
                      destination_collection="dst%d" % (i % 3), destination_path="/replica/%08d/" % i,
                      status=statuses[i % len(statuses)], attempts=1, last_error="FAILED: x" if i % 10 == 9 else None,
                      created_at=start, updated_at=start + i) for i in range(items)]
    for offset in range(0, len(item_rows), CHUNK):
        db.upsert("transfer_items", item_rows[offset:offset + CHUNK],
                  key=["route", "source_path", "destination_collection", "destination_path"])


def timed(function):
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def report(db, dest, history_hours):
    data = _report.collect(db, history_hours=history_hours)
    files = _report.render_site(data)
    if _report.changed_files(_report.read_site(dest), files):
        _report.publish_site(dest, files)
    return data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000000)
    parser.add_argument("--items", type=int, default=100000)
    parser.add_argument("--tasks", type=int, default=10000)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="scidata-bench-report-")
    try:
        path = os.path.join(workdir, "state.db")
        db = open_state(path)
        fill_seconds, _none = timed(lambda: fill(db, args.events, args.items, args.tasks))
        db.execute("ANALYZE")
        assert db.scalar("SELECT count(*) FROM task_events") == args.events // args.tasks * args.tasks
        dest = os.path.join(workdir, "www", "replication")
        rows = []
        count, _n = timed(lambda: db.scalar("SELECT count(*) FROM task_events"))
        scan, _n = timed(lambda: db.scalar("SELECT SUM(bytes) FROM task_events"))
        rows.append(("baseline: SELECT count(*) FROM task_events", count))
        rows.append(("baseline: SELECT SUM(bytes) FROM task_events (full scan)", scan))
        cold, data = timed(lambda: report(db, dest, 48))  # includes importing matplotlib and jinja2
        rows.append(("report, 48 h, first in process (imports)", cold))
        warm, data = timed(lambda: report(db, dest, 48))
        rows.append(("report, 48 h", warm))
        collect, _data = timed(lambda: _report.collect(db, history_hours=48))
        rows.append(("  of which SQL (collect), 48 h", collect))
        full, data = timed(lambda: report(db, dest, DAYS * 24))
        rows.append(("report, %d h (all events charted)" % (DAYS * 24), full))
        collect, _data = timed(lambda: _report.collect(db, history_hours=DAYS * 24))
        rows.append(("  of which SQL (collect), %d h" % (DAYS * 24), collect))
        db.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    totals = data["summary.json"]["totals"]
    print("replication_report on SQLite: %d task events, %d items, %d tasks (filled in %.1f s)"
          % (args.events, totals["items_total"], totals["tasks"], fill_seconds))
    print("%-58s %9s %10s %11s" % ("what", "seconds", "x count(*)", "x full scan"))
    for name, seconds in rows:
        print("%-58s %9.3f %10.1f %11.1f" % (name, seconds, seconds / count, seconds / scan))
    print("goal: report <= 5 s -> %s" % ("met" if max(cold, warm, full) <= 5 else "NOT met"))


if __name__ == "__main__":
    main()
