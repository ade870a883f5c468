# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bulk upsert of 100k transfer items through the state layer, side by side with raw COPY.

Run from the collection layout (``make bench`` does): starts a throwaway PostgreSQL cluster
(fsync on, as in production), then prints rows/s for

  * SQLite ``upsert`` (new rows, then the same rows again updating one column);
  * PostgreSQL ``upsert`` (the same two passes);
  * the baseline: ``psql -c "\\copy ..."`` of the same rows into a table with the same indexes.

Goal: the PostgreSQL path at >= 0.5x the COPY baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(HERE)))),
                os.path.join(os.path.dirname(HERE), "tests", "harness")]

import services  # noqa: E402
from ansible_collections.scidata.replication.plugins.module_utils._state import (  # noqa: E402
    _encode_copy_value,
    open_state,
)

KEY = ["route", "source_path", "destination_collection", "destination_path"]
COLUMNS = ["route", "source_collection", "source_path", "destination_collection", "destination_path", "status",
           "created_at", "updated_at"]


def make_rows(count, status):
    now = time.time()
    return [dict(route="bench", source_collection="9d6d994a-6d04-11e5-ba46-22000b92c6ec",
                 source_path="/css03_data/CMIP6/CMIP/NCAR/CESM2/historical/r%di1p1f1/Amon/tas/gn/v%08d/" % (n % 11, n),
                 destination_collection="dd1ee92a-6d04-11e5-ba46-22000b92c6ec",
                 destination_path="/esg/replica/CMIP6/%08d/" % n, status=status, created_at=now, updated_at=now)
            for n in range(count)]


def timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def bench_state(url, rows, updated):
    db = open_state(url)
    insert = timed(lambda: db.upsert("transfer_items", rows, key=KEY, update=["status", "updated_at"]))
    update = timed(lambda: db.upsert("transfer_items", updated, key=KEY, update=["status", "updated_at"]))
    assert db.scalar("SELECT count(*) FROM transfer_items WHERE status = 'ACTIVE'") == len(rows)
    db.close()
    return insert, update


def bench_copy(postgres, database, rows, workdir):
    postgres.psql("CREATE TABLE copy_target (LIKE transfer_items INCLUDING ALL)", database=database)
    data = os.path.join(workdir, "rows.tsv")
    with open(data, "w") as handle:
        for row in rows:
            handle.write("\t".join(_encode_copy_value(row[c]) for c in COLUMNS) + "\n")
    psql = os.path.join(postgres.info["bindir"], "psql")
    argv = [psql if os.path.exists(psql) else "psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(postgres.info["port"]),
            "-U", "postgres", "-d", database, "-c", "\\copy copy_target (%s) FROM '%s'" % (", ".join(COLUMNS), data)]
    seconds = timed(lambda: subprocess.run(argv, check=True))
    assert int(postgres.psql("SELECT count(*) FROM copy_target", database=database)) == len(rows)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100000)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="scidata-bench-")
    os.chmod(workdir, 0o755)
    postgres = services.PostgresServer(workdir).start(fsync=True)
    try:
        rows = make_rows(args.rows, "PENDING")
        updated = make_rows(args.rows, "ACTIVE")
        sqlite_insert, sqlite_update = bench_state(os.path.join(workdir, "state.db"), rows, updated)
        url = postgres.create_database("bench")
        pg_insert, pg_update = bench_state(url, rows, updated)
        copy = bench_copy(postgres, "bench", rows, workdir)
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def rate(seconds):
        return args.rows / seconds

    print("bulk upsert of %d rows (rows/s; ratio against raw COPY through psql)" % args.rows)
    print("%-40s %12s %8s" % ("path", "rows/s", "x COPY"))
    for name, seconds in [("psql \\copy (baseline)", copy),
                          ("SQLite upsert, new rows", sqlite_insert), ("SQLite upsert, all conflicts", sqlite_update),
                          ("PostgreSQL upsert, new rows", pg_insert), ("PostgreSQL upsert, all conflicts", pg_update)]:
        print("%-40s %12.0f %8.2f" % (name, rate(seconds), copy / seconds))


if __name__ == "__main__":
    main()
