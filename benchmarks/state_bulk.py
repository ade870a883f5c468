# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bulk upsert of 100k transfer items through the state layer, side by side with raw COPY.

Run from the collection layout (``make bench`` does). Prints rows/s for SQLite and PostgreSQL
``upsert`` (new rows, then the same rows again updating two columns) and the baseline, a
``psql \\copy`` of the same rows into a table with the same indexes. Goal: PostgreSQL >= 0.5x COPY.
"""

from __future__ import annotations

import argparse
import os
import time

from common import postgres_server, print_table, psql_copy, timed, workdir

from ansible_collections.scidata.replication.plugins.module_utils._state import open_state

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


def upsert_twice(url, rows, updated):
    db = open_state(url)
    insert, _count = timed(lambda: db.upsert("transfer_items", rows, key=KEY, update=["status", "updated_at"]))
    update, _count = timed(lambda: db.upsert("transfer_items", updated, key=KEY, update=["status", "updated_at"]))
    assert db.scalar("SELECT count(*) FROM transfer_items WHERE status = 'ACTIVE'") == len(rows)
    db.close()
    return insert, update


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100000)
    count = parser.parse_args().rows
    rows, updated = make_rows(count, "PENDING"), make_rows(count, "ACTIVE")
    with workdir() as path, postgres_server(path) as postgres:
        sqlite_insert, sqlite_update = upsert_twice(os.path.join(path, "state.db"), rows, updated)
        url = postgres.create_database("bench")
        pg_insert, pg_update = upsert_twice(url, rows, updated)
        postgres.psql("CREATE TABLE copy_target (LIKE transfer_items INCLUDING ALL)", database="bench")
        copy = psql_copy(postgres, "bench", "copy_target", COLUMNS, rows, path)
    print_table("bulk upsert of %d rows: rows/s, and the ratio to raw COPY through psql" % count, [
        (name, count / seconds, "rows/s", copy / seconds) for name, seconds in [
            ("psql \\copy (baseline)", copy), ("SQLite upsert, new rows", sqlite_insert),
            ("SQLite upsert, all conflicts", sqlite_update), ("PostgreSQL upsert, new rows", pg_insert),
            ("PostgreSQL upsert, all conflicts", pg_update)]])


if __name__ == "__main__":
    main()
