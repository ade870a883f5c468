# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""globus_transfer and globus_task_events at scale, each beside a baseline in the same run.

1. Register 100k paths x 2 destinations and plan both routes on SQLite (goal <= 3 s), beside a
   plain ``executemany`` INSERT of the same rows.
2. Refresh N open tasks against the API emulator and count the requests it received
   (goal <= ceil(N/ids-per-request) + 2, every URL <= 8 KiB), beside the N requests of one
   ``get_task`` per task.
3. Ingest task events into PostgreSQL (parse, fingerprint, upsert) beside a raw ``psql \\copy``
   of the same rows (goal >= 0.5x COPY).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import time
from urllib.parse import urlencode

from common import postgres_server, print_table, psql_copy, timed, workdir

import globus_setup
from ansible_collections.scidata.replication.plugins.module_utils import _globus, _transfers
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state
from globus_emulator.harness import EmulatorProcess

POLICY = dict(max_active_tasks=3, identity_max_open_tasks=100, items_per_task=1, max_attempts=5, retry_backoff=600, retry_backoff_max=86400)


def esgf_like_paths(count):
    return ["CMIP6/CMIP/NCAR/CESM2/historical/r%di1p1f1/Amon/var%03d/gn/v%08d/" % (n % 11, n % 997, n)
            for n in range(count)]


def bench_registration(path, count):
    paths = esgf_like_paths(count)
    routes = [dict(name=name, source_collection=globus_setup.SRC, source_prefix="/css03_data", items=paths,
                   destinations=[dict(collection=collection, prefix="/replica")], order=order)
              for name, collection, order in (("to-a", globus_setup.DST, "asc"), ("to-b", globus_setup.DST2, "desc"))]
    db = open_state(os.path.join(path, "state.db"))

    def register_and_plan():
        now = time.time()
        registered = sum(_transfers.register_items(db, _transfers.item_rows(route, now)) for route in routes)
        planned = [_transfers.plan_route(db, route, POLICY, 10, now) for route in routes]
        return registered, planned

    seconds, (registered, planned) = timed(register_and_plan)
    assert registered == 2 * count and all(len(batches) == 3 for batches, _reason, _waiting in planned)
    rerun, (again, _planned) = timed(register_and_plan)
    assert again == 0
    db.close()

    rows = [tuple(r.values()) for route in routes for r in _transfers.item_rows(route, time.time())]
    plain = sqlite3.connect(os.path.join(path, "plain.db"), isolation_level=None)
    plain.execute("PRAGMA journal_mode = WAL")
    plain.execute("CREATE TABLE items (route, source_collection, source_path, destination_collection, "
                  "destination_path, recursive, status, attempts, created_at, updated_at)")

    def insert():
        plain.execute("BEGIN")
        plain.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        plain.execute("COMMIT")

    baseline, _result = timed(insert)
    plain.close()
    return seconds, rerun, baseline


def bench_refresh(path, count):
    emulator = EmulatorProcess(globus_setup.emulator_config(os.path.join(path, "collections")),
                               os.path.join(path, "emulator")).start()
    try:
        emulator.configure(limits={"max_active_tasks": 3, "max_pending_tasks": count + 10,
                                   "requests_per_second": 100000},
                           transfer_rate_bytes_per_second=1)  # tasks stay open while we refresh them
        os.environ.update(emulator.env)
        client = _globus.transfer_client(dict(client_id=globus_setup.CONFIDENTIAL, client_secret=globus_setup.SECRET))
        os.makedirs(os.path.join(path, "collections", "src", "d"), exist_ok=True)
        with open(os.path.join(path, "collections", "src", "d", "f"), "wb") as handle:
            handle.write(b"x" * 64)
        db = open_state(os.path.join(path, "refresh.db"))
        for number in range(count):
            _globus.submit_exactly_once(db, client, "bench", {
                "DATA_TYPE": "transfer", "source_endpoint": globus_setup.SRC, "destination_endpoint": globus_setup.DST,
                "label": "bench %d" % number, "DATA": [{"DATA_TYPE": "transfer_item", "source_path": "/d/f",
                                                        "destination_path": "/out/%d" % number}]})
        task_ids = _transfers.open_task_ids(db, jobs=["bench"])
        before = len(emulator.admin("GET", "/_emulator/requests")["requests"])
        seconds, _changes = timed(lambda: _transfers.refresh_tasks(db, client, task_ids))
        requests = emulator.admin("GET", "/_emulator/requests")["requests"][before:]
        listed = [r for r in requests if r["path"].endswith("/task_list")]
        # Measured as the production URL, which is what a front end sees.
        longest_url = max(len("https://transfer.api.globus.org/v0.10/task_list?" + urlencode(r["query"]))
                          for r in listed)
        ids_per_request = max(len(r["query"]["filter"].split(",")) for r in listed)
        sample = task_ids[:100]  # one get_task per task, timed on a sample and scaled to N
        sample_seconds, _result = timed(lambda: [client.get_task(task_id) for task_id in sample])
        baseline_seconds = sample_seconds * len(task_ids) / len(sample)
        db.close()
        emulator.admin("POST", "/_emulator/reset", {})
        return len(task_ids), len(requests), ids_per_request, longest_url, seconds, baseline_seconds
    finally:
        for name in emulator.env:
            os.environ.pop(name, None)
        emulator.stop()


def bench_events(path, count):
    tasks = 100
    events = [("task-%03d" % (n % tasks), {
        "DATA_TYPE": "event", "code": "PROGRESS", "is_error": False, "description": "progress",
        "time": "2026-01-%02d %02d:%02d:%02d+00:00" % (1 + n % 28, n % 24, n % 60, (n // 60) % 60),
        "details": json.dumps({"bytes_transferred": 1048576 + n, "duration": 10.0 + n % 7, "mbps": 812.5})})
        for n in range(count)]
    with postgres_server(path) as postgres:
        url = postgres.create_database("events")
        db = open_state(url)
        now = time.time()
        db.upsert("globus_tasks", [dict(submission_id="s-%03d" % n, task_id="task-%03d" % n, job="bench",
                                        source_endpoint="a", destination_endpoint="b", request="{}",
                                        created_at=now, updated_at=now) for n in range(tasks)], key=["submission_id"])

        def ingest():
            return db.upsert("task_events", [_transfers.event_row(task_id, event) for task_id, event in events],
                             key=["task_id", "fingerprint"])

        seconds, added = timed(ingest)
        assert added == count
        rows = [_transfers.event_row(task_id, event) for task_id, event in events]
        postgres.psql("CREATE TABLE copy_target (LIKE task_events INCLUDING ALL)", database="events")
        columns = list(rows[0])
        copy = psql_copy(postgres, "events", "copy_target", columns, rows, path)
        db.close()
    return seconds, copy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=100000)
    parser.add_argument("--tasks", type=int, default=1200)
    parser.add_argument("--events", type=int, default=200000)
    args = parser.parse_args()
    with workdir() as path:
        seconds, rerun, baseline = bench_registration(path, args.paths)
        print_table("register %d paths x 2 destinations and plan (SQLite; goal <= 3 s)" % args.paths, [
            ("register + plan, first run", seconds, "s", seconds / baseline),
            ("register + plan, rerun (nothing new)", rerun, "s", rerun / baseline),
            ("baseline: plain INSERT of the same rows", baseline, "s", 1.0)])
        tasks, requests, per_request, longest_url, refresh, per_task = bench_refresh(path, args.tasks)
        print_table("refresh %d open tasks (goal <= ceil(N/%d)+2 = %d requests, URLs <= 8192 characters)"
                    % (tasks, per_request, math.ceil(tasks / float(per_request)) + 2), [
                        ("requests received by the emulator", requests, "requests", None),
                        ("longest task_list URL", longest_url, "characters", None),
                        ("refresh_tasks", refresh, "s", refresh / per_task),
                        ("baseline: one get_task per task (N requests)", per_task, "s", 1.0)])
        ingest, copy = bench_events(path, args.events)
        print_table("ingest %d task events into PostgreSQL (goal >= 0.5x COPY)" % args.events, [
            ("event_row + upsert", args.events / ingest, "events/s", copy / ingest),
            ("baseline: psql \\copy of the same rows", args.events / copy, "events/s", 1.0)])


if __name__ == "__main__":
    main()
