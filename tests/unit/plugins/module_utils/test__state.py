# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The state layer against both real backends: SQLite files and the harness's PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError, StateError
from ansible_collections.scidata.replication.plugins.module_utils._state import (
    LATEST_VERSION,
    MIGRATIONS,
    StateDB,
    open_state,
    parse_state_db,
)

ITEM_KEY = ["route", "source_path", "destination_collection", "destination_path"]
WORKER = os.path.join(os.path.dirname(__file__), "..", "..", "..", "harness", "state_worker.py")
TABLES = {"schema_version", "globus_tasks", "transfer_items", "task_events", "epns", "rsync_attempts", "sync_jobs"}


def item(n, route="r1", status="PENDING", **extra):
    row = dict(route=route, source_collection="src", source_path="/data/%d" % n, destination_collection="dst",
               destination_path="/replica/%d" % n, status=status, created_at=1.0, updated_at=1.0)
    row.update(extra)
    return row


def table_names(db):
    if db.dialect == "sqlite":
        return {r["name"] for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {r["tablename"] for r in db.query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}


def worker(env, *args):
    return subprocess.Popen([sys.executable, WORKER] + [str(a) for a in args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("value, expected", [
    ("/var/lib/x/state.db", ("sqlite", "/var/lib/x/state.db")),
    ("sqlite:////var/lib/x/state.db", ("sqlite", "/var/lib/x/state.db")),
    ("postgresql://repl@db.example.org/replication", ("postgresql", "postgresql://repl@db.example.org/replication")),
    ("postgresql:///replication?host=/run/postgresql", ("postgresql", "postgresql:///replication?host=/run/postgresql")),
])
def test_parse_state_db_selects_backend(value, expected):
    assert parse_state_db(value) == expected


def test_parse_state_db_relative_sqlite_url_is_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_state_db("sqlite:///state.db") == ("sqlite", str(tmp_path / "state.db"))


@pytest.mark.parametrize("value", [
    "postgresql://repl:hunter2@db.example.org/replication", "mysql://db/x", "sqlite://", "sqlite:/x", "",
])
def test_parse_state_db_refuses_passwords_and_unknown_schemes(value):
    with pytest.raises(ConfigError) as info:
        parse_state_db(value)
    assert "hunter2" not in info.value.msg


def test_migrations_from_empty_then_rerun_is_a_no_op(state_db_url):
    db = StateDB(state_db_url)
    assert db.schema_version() == 0
    assert db.migrate() == [v for v, _d, _s in MIGRATIONS]
    assert TABLES <= table_names(db)
    assert db.schema_version() == LATEST_VERSION
    assert db.migrate() == []
    assert db.scalar("SELECT count(*) FROM schema_version") == len(MIGRATIONS)
    db.close()


def test_sqlite_pragmas_are_set(tmp_path):
    db = open_state(str(tmp_path / "state.db"))
    assert db.scalar("PRAGMA journal_mode") == "wal"
    assert db.scalar("PRAGMA synchronous") == 1  # NORMAL
    assert db.scalar("PRAGMA foreign_keys") == 1
    assert db.scalar("PRAGMA busy_timeout") >= 10000
    db.close()


def test_many_openers_of_a_new_sqlite_file_all_get_it_in_wal(tmp_path):
    # Switching a new file to WAL needs it to itself and SQLite's busy handler does not cover
    # the switch: openers racing on a fresh file used to fail with "database is locked".
    errors = []

    def open_and_check(path, barrier):
        barrier.wait()
        try:
            db = StateDB(path)
            if db.scalar("PRAGMA journal_mode") != "wal":
                errors.append("not in WAL: %s" % path)
            db.close()
        except StateError as exc:
            errors.append(exc.msg)

    for number in range(400):
        barrier = threading.Barrier(16)
        threads = [threading.Thread(target=open_and_check, args=(str(tmp_path / ("%d.db" % number)), barrier))
                   for _thread in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


def test_check_mode_open_creates_nothing(tmp_path):
    path = tmp_path / "sub" / "state.db"
    db = open_state(str(path), check_mode=True)
    assert db.schema_version() == LATEST_VERSION  # planned against an empty in-memory schema
    db.close()
    assert not (tmp_path / "sub").exists()


def test_check_mode_migrates_and_writes_inside_a_rolled_back_transaction(state_db_url):
    StateDB(state_db_url).close()  # the SQLite file / the database exists: schema version 0
    db = open_state(state_db_url, check_mode=True)
    assert db.schema_version() == LATEST_VERSION
    db.upsert("transfer_items", [item(1)], key=ITEM_KEY)
    with db.transaction():  # joins the outer transaction and is rolled back with it
        db.upsert("transfer_items", [item(2)], key=ITEM_KEY)
    assert db.scalar("SELECT count(*) FROM transfer_items") == 2
    db.close()
    db = StateDB(state_db_url)
    assert db.schema_version() == 0
    db.close()


def test_bulk_upsert_is_idempotent_and_updates(state_db_url):
    db = open_state(state_db_url)
    rows = [item(n) for n in range(2500)]
    assert db.upsert("transfer_items", rows, key=ITEM_KEY) == 2500
    assert db.upsert("transfer_items", rows, key=ITEM_KEY) == 0  # DO NOTHING: nothing new
    assert db.scalar("SELECT count(*) FROM transfer_items") == 2500
    changed = [item(n, status="SUCCEEDED") for n in range(0, 2500, 2)]
    db.upsert("transfer_items", changed, key=ITEM_KEY, update=["status"])
    assert db.scalar("SELECT count(*) FROM transfer_items WHERE status = 'SUCCEEDED'") == 1250
    assert db.scalar("SELECT count(*) FROM transfer_items") == 2500
    db.close()


def test_bulk_upsert_keeps_the_last_of_repeated_keys(state_db_url):
    db = open_state(state_db_url)
    db.upsert("transfer_items", [item(1, status="A"), item(1, status="B")], key=ITEM_KEY, update=["status"])
    assert [r["status"] for r in db.query("SELECT status FROM transfer_items")] == ["B"]
    db.close()


HOSTILE_PATHS = [
    "/tab\there", "/new\nline", "/back\\slash\\N", "/carriage\rreturn", "/ünïcødé/データ", "/-leading dash",
    "/$(touch pwned)", "/quote'\"", "/percent %s ?",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_bulk_upsert_round_trips_hostile_text(state_db_url, path):
    db = open_state(state_db_url)
    db.upsert("transfer_items", [item(1, source_path=path, last_error=None)], key=ITEM_KEY)
    row = db.query_one("SELECT source_path, last_error FROM transfer_items")
    assert row == {"source_path": path, "last_error": None}
    assert db.scalar("SELECT count(*) FROM transfer_items WHERE source_path = ?", (path,)) == 1
    db.close()


def test_bulk_upsert_round_trips_columns_of_mixed_values(state_db_url):
    # Plain and hostile strings, numbers and NULLs in the same columns of one bulk upsert.
    paths = ["/plain/%d" % n for n in range(50)] + HOSTILE_PATHS
    rows = [item(n, source_path=path, attempts=n % 3, next_attempt_at=None if n % 4 else 1.5 + n,
                 bytes=10 ** 12 + n, last_error=path if n % 2 else None) for n, path in enumerate(paths)]
    db = open_state(state_db_url)
    assert db.upsert("transfer_items", rows, key=ITEM_KEY) == len(rows)
    stored = db.query("SELECT source_path, attempts, next_attempt_at, bytes, last_error FROM transfer_items "
                      "ORDER BY bytes")
    assert [dict(r) for r in stored] == [
        dict(source_path=r["source_path"], attempts=r["attempts"], next_attempt_at=r["next_attempt_at"],
             bytes=r["bytes"], last_error=r["last_error"]) for r in rows]
    db.close()


def test_transaction_rolls_back_on_error(state_db_url):
    db = open_state(state_db_url)
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.upsert("transfer_items", [item(1)], key=ITEM_KEY)
            raise RuntimeError("boom")
    assert db.scalar("SELECT count(*) FROM transfer_items") == 0
    with db.transaction():
        db.upsert("transfer_items", [item(2)], key=ITEM_KEY)
        with db.transaction():  # nested: joins the outer one
            db.upsert("transfer_items", [item(3)], key=ITEM_KEY)
    assert db.scalar("SELECT count(*) FROM transfer_items") == 2
    db.close()


def test_statement_errors_become_state_errors(state_db_url):
    db = open_state(state_db_url)
    with pytest.raises(StateError) as info:
        db.execute("INSERT INTO task_events (task_id) VALUES (?)", ("x",))
    assert state_db_url in info.value.msg
    db.close()


def test_unreachable_postgresql_is_a_clear_error():
    with pytest.raises(StateError) as info:
        StateDB("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2)
    assert "cannot connect" in info.value.msg


def test_password_option_reaches_postgresql(postgres):
    url = postgres.create_database("pw_test", owner=postgres.PASSWORD_ROLE)
    with pytest.raises(StateError):
        StateDB(url, password="wrong-password", connect_timeout=5)
    db = open_state(url, password=postgres.PASSWORD)
    assert db.schema_version() == LATEST_VERSION
    db.close()


def test_concurrent_migrations_apply_each_version_once(state_db_url, python_env):
    processes = [worker(python_env, "migrate", state_db_url) for _number in range(4)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, outputs
    assert all(out.strip() == "version %d" % LATEST_VERSION for out, _err in outputs)
    db = StateDB(state_db_url)
    assert db.scalar("SELECT count(*) FROM schema_version") == len(MIGRATIONS)
    db.close()


def test_two_concurrent_writers_lose_nothing(state_db_url, python_env):
    open_state(state_db_url).close()
    writers = [worker(python_env, "upsert", state_db_url, tag, start, 5000, 250)
               for tag, start in (("a", 0), ("b", 5000))]
    outputs = [p.communicate(timeout=300) for p in writers]
    assert [p.returncode for p in writers] == [0, 0], outputs
    db = open_state(state_db_url)
    assert db.scalar("SELECT count(*) FROM transfer_items") == 10000
    assert db.scalar("SELECT count(*) FROM transfer_items WHERE route = 'a' AND source_path < '/data/00005000'") == 5000
    assert db.scalar("SELECT count(*) FROM transfer_items WHERE route = 'b' AND source_path >= '/data/00005000'") == 5000
    assert db.integrity_ok()
    db.close()


def test_sigkill_inside_a_transaction_keeps_committed_rows(state_db_url, python_env):
    open_state(state_db_url).close()
    process = worker(python_env, "crash", state_db_url, 5, 400)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline().strip()
        lines.append(line)
        if line == "in-flight" or not line:
            break
    assert lines[-1] == "in-flight", (lines, process.stderr.read())
    process.send_signal(signal.SIGKILL)
    process.wait()
    db = open_state(state_db_url)
    assert db.integrity_ok()
    assert db.scalar("SELECT count(*) FROM transfer_items") == 5 * 400
    db.close()


def test_several_upserts_in_one_transaction(state_db_url):
    db = open_state(state_db_url)
    with db.transaction():
        db.upsert("transfer_items", [item(1)], key=ITEM_KEY)
        db.upsert("transfer_items", [item(1, status="DONE")], key=ITEM_KEY, update=["status"])
        db.upsert("transfer_items", [item(2)], key=ITEM_KEY)
    assert db.query("SELECT source_path, status FROM transfer_items ORDER BY source_path") == [
        {"source_path": "/data/1", "status": "DONE"}, {"source_path": "/data/2", "status": "PENDING"}]
    db.close()
