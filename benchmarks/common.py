# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the benchmarks share: the import path, a timer, throwaway services and the COPY baseline."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTION_ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_ROOT))),
                os.path.join(COLLECTION_ROOT, "tests", "harness"), os.path.join(COLLECTION_ROOT, "tests", "emulator")]

import services  # noqa: E402
from ansible_collections.scidata.replication.plugins.module_utils._state import _encode_copy_value  # noqa: E402


def timed(function):
    """Seconds one call of ``function`` takes, and its result."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


@contextlib.contextmanager
def workdir():
    path = tempfile.mkdtemp(prefix="scidata-bench-")
    os.chmod(path, 0o755)  # the PostgreSQL server runs as the postgres account
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(path):
    """A throwaway PostgreSQL cluster with fsync on, as in production."""
    server = services.PostgresServer(path).start(fsync=True)
    try:
        yield server
    finally:
        server.stop()


def psql_copy(postgres, database, table, columns, rows, path):
    """Seconds for ``psql \\copy`` of ``rows`` (dicts) into ``table``: the baseline."""
    data = os.path.join(path, table + ".tsv")
    with open(data, "w") as handle:
        for row in rows:
            handle.write("\t".join(_encode_copy_value(row[c]) for c in columns) + "\n")
    psql = os.path.join(postgres.info["bindir"], "psql")
    argv = [psql if os.path.exists(psql) else "psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(postgres.info["port"]),
            "-U", "postgres", "-d", database, "-c", "\\copy %s (%s) FROM '%s'" % (table, ", ".join(columns), data)]
    seconds, _result = timed(lambda: subprocess.run(argv, check=True))
    return seconds


def print_table(title, rows):
    """``rows``: (name, value, unit, ratio or None) printed as an aligned table."""
    print(title)
    width = max(48, max(len(row[0]) for row in rows))
    for name, value, unit, ratio in rows:
        shown = "{:,.0f}".format(value) if value >= 100 else "%.3f" % value
        print("  %-*s %12s %-8s %s" % (width, name, shown, unit, "" if ratio is None else "%.2fx" % ratio))
