# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""The one state layer: every module reaches its database through ``open_state``.

``state_db`` chooses the backend: a file path or ``sqlite:///path`` is SQLite (the embedded
default), ``postgresql://...`` is PostgreSQL through psycopg2. SQL is written once with ``?``
placeholders and the dialect differences live in ``_DIALECTS``; the schema is a list of
versioned migrations applied under a database-wide lock so that two processes never migrate
at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time

from ansible_collections.scidata.replication.plugins.module_utils._errors import (
    ConfigError,
    MissingLibraryError,
    StateError,
)

try:
    import psycopg2
    import psycopg2.extensions

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as exc:  # only needed for postgresql:// URLs
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = exc


SQLITE_BUSY_TIMEOUT_MS = 30000
# The same bound on PostgreSQL: a statement waiting longer for a lock fails instead of waiting on.
PG_LOCK_TIMEOUT_MS = 30000
# Arbitrary but fixed: every process migrating this schema takes the same advisory lock.
PG_MIGRATION_LOCK_KEY = 4711020301

_DIALECTS = {
    "sqlite": {
        "pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "bigint": "INTEGER",
        "float": "REAL",
    },
    "postgresql": {
        "pk": "BIGSERIAL PRIMARY KEY",
        "bigint": "BIGINT",
        "float": "DOUBLE PRECISION",
    },
}

# Timestamps are seconds since the epoch ({float}); flags are INTEGER 0/1 on both backends.
# Each migration is (version, description, statements); never edit a released one, add another.
MIGRATIONS = [
    (
        1,
        "initial schema: Globus tasks, items, events and files; EPNs, rsync attempts, jobs",
        [
            """CREATE TABLE globus_tasks (
                id {pk},
                submission_id TEXT NOT NULL UNIQUE,
                task_id TEXT UNIQUE,
                job TEXT NOT NULL,
                kind TEXT NOT NULL DEFAULT 'transfer',
                label TEXT,
                source_endpoint TEXT NOT NULL,
                destination_endpoint TEXT NOT NULL,
                request TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'UNSUBMITTED',
                nice_status TEXT,
                is_paused INTEGER NOT NULL DEFAULT 0,
                files {bigint} NOT NULL DEFAULT 0,
                files_transferred {bigint} NOT NULL DEFAULT 0,
                files_skipped {bigint} NOT NULL DEFAULT 0,
                directories {bigint} NOT NULL DEFAULT 0,
                bytes_transferred {bigint} NOT NULL DEFAULT 0,
                bytes_checksummed {bigint} NOT NULL DEFAULT 0,
                effective_bytes_per_second {bigint} NOT NULL DEFAULT 0,
                faults {bigint} NOT NULL DEFAULT 0,
                request_time {float},
                completion_time {float},
                deadline {float},
                fatal_error TEXT,
                events_ingested {bigint} NOT NULL DEFAULT 0,
                events_complete INTEGER NOT NULL DEFAULT 0,
                created_at {float} NOT NULL,
                submitted_at {float},
                updated_at {float} NOT NULL
            )""",
            "CREATE INDEX globus_tasks_job_status ON globus_tasks (job, status)",
            """CREATE TABLE transfer_items (
                id {pk},
                route TEXT NOT NULL,
                source_collection TEXT NOT NULL,
                source_path TEXT NOT NULL,
                destination_collection TEXT NOT NULL,
                destination_path TEXT NOT NULL,
                recursive INTEGER NOT NULL DEFAULT 1,
                status TEXT NOT NULL DEFAULT 'PENDING',
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at {float},
                submission_id TEXT REFERENCES globus_tasks (submission_id),
                last_error TEXT,
                bytes {bigint},
                files {bigint},
                created_at {float} NOT NULL,
                updated_at {float} NOT NULL,
                completed_at {float},
                delete_submission_id TEXT,
                source_deleted_at {float},
                delete_note TEXT,
                UNIQUE (route, source_path, destination_collection, destination_path)
            )""",
            "CREATE INDEX transfer_items_route_status ON transfer_items (route, status, next_attempt_at)",
            "CREATE INDEX transfer_items_submission ON transfer_items (submission_id)",
            """CREATE TABLE task_events (
                id {pk},
                task_id TEXT NOT NULL REFERENCES globus_tasks (task_id),
                time {float} NOT NULL,
                code TEXT NOT NULL,
                is_error INTEGER NOT NULL DEFAULT 0,
                description TEXT,
                details TEXT,
                bytes {bigint},
                mbps {float},
                duration {float},
                fingerprint TEXT NOT NULL,
                UNIQUE (task_id, fingerprint)
            )""",
            "CREATE INDEX task_events_time ON task_events (time)",
            """CREATE TABLE task_files (
                id {pk},
                task_id TEXT NOT NULL REFERENCES globus_tasks (task_id),
                kind TEXT NOT NULL,
                source_path TEXT NOT NULL,
                destination_path TEXT,
                error_code TEXT,
                error_details TEXT,
                UNIQUE (task_id, kind, source_path)
            )""",
            """CREATE TABLE epns (
                epn TEXT PRIMARY KEY,
                beamline TEXT,
                visit_start {float},
                visit_end {float},
                principal_scientist TEXT,
                data_scientists TEXT,
                project TEXT,
                source_path TEXT,
                size_bytes {bigint},
                file_count {bigint},
                newest_mtime {float},
                state TEXT NOT NULL DEFAULT 'pending',
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at {float},
                last_rc INTEGER,
                bytes_transferred {bigint},
                last_synced_at {float},
                alerted_at {float},
                claimed_by TEXT,
                claim_expires_at {float},
                created_at {float} NOT NULL,
                updated_at {float} NOT NULL
            )""",
            "CREATE INDEX epns_state ON epns (state, newest_mtime)",
            """CREATE TABLE rsync_attempts (
                id {pk},
                epn TEXT NOT NULL REFERENCES epns (epn),
                host TEXT,
                started_at {float} NOT NULL,
                ended_at {float},
                rc INTEGER,
                bytes {bigint},
                files {bigint},
                stderr_tail TEXT
            )""",
            "CREATE INDEX rsync_attempts_epn ON rsync_attempts (epn, started_at)",
            """CREATE TABLE sync_jobs (
                name TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                source TEXT,
                last_run_at {float},
                last_scan_at {float},
                files_indexed {bigint},
                files_pending {bigint},
                last_result TEXT,
                updated_at {float} NOT NULL
            )""",
        ],
    ),
    (
        2,
        "Globus tasks: truncated event history, fetch backoff, why a task is paused",
        [
            "ALTER TABLE globus_tasks ADD COLUMN pause_reason TEXT",
            "ALTER TABLE globus_tasks ADD COLUMN events_truncated INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE globus_tasks ADD COLUMN fetch_failures INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE globus_tasks ADD COLUMN fetch_retry_at {float}",
            "ALTER TABLE globus_tasks ADD COLUMN fetch_error TEXT",
        ],
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]


def parse_state_db(state_db):
    """Return ``(dialect, target)``: a SQLite file path or a libpq connection URI.

    A password anywhere in the value is refused because the value is echoed in results and logs.
    """
    from urllib.parse import parse_qsl, urlsplit

    if not state_db:
        raise ConfigError("state_db must name a SQLite file or a postgresql:// URI")
    scheme = state_db.split("://", 1)[0].lower() if "://" in state_db else ""
    if scheme in ("postgresql", "postgres"):
        try:
            uri = urlsplit(state_db)
            password_in_query = any(pair[0].strip().lower() == "password" for pair in parse_qsl(uri.query, keep_blank_values=True))
            has_password = uri.password is not None or password_in_query
        except ValueError:
            raise ConfigError("state_db is not a valid postgresql:// URI (see the libpq connection URI format)") from None
        if has_password:
            raise ConfigError(
                "state_db must not contain a password: it would be shown in results and logs. "
                "Use state_db_password (or SCIDATA_STATE_DB_PASSWORD), PGPASSWORD, ~/.pgpass "
                "or a libpq service file instead."
            )
        return "postgresql", state_db
    if state_db == ":memory:":
        return "sqlite", state_db
    if re.match(r"\s*[A-Za-z_]+\s*=", state_db):
        raise ConfigError(
            "state_db looks like a libpq key=value connection string, which is not supported: write it as a "
            "postgresql://user@host:port/dbname URI (password through state_db_password), or a SQLite file whose "
            "name contains '=' as ./name or sqlite:///name"
        )
    if state_db.startswith("sqlite:"):
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db
        path = state_db[len("sqlite://"):] if state_db.startswith("sqlite://") else ""
        if not path.startswith("/") or len(path) < 2:
            raise ConfigError("a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path, got %s" % state_db)
        path = path[1:]
    elif scheme:
        # Only a well-formed scheme is echoed: the rest may hold credentials.
        shown = scheme + "://" if re.match(r"[a-z][a-z0-9+.-]*$", scheme) else "of this value"
        raise ConfigError("state_db scheme %s is not supported (use a path, sqlite:/// or postgresql://)" % shown)
    else:
        path = state_db
    return "sqlite", os.path.abspath(os.path.expanduser(path))


def to_pg_params(sql):
    """Rewrite our ``?`` placeholders to psycopg2's ``%s`` (escaping literal ``%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _encode_copy_value(value):
    """One field in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        if _COPY_SPECIAL.search(value) is None:
            return value
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return str(value)


def _copy_text(values, width):
    """Rows (tuples of ``width`` values) as the text COPY reads, encoded a column at a time: a
    column of plain strings or of numbers needs no Python call per value (numbers are formatted
    once per distinct value: rows written together mostly share their timestamps)."""
    columns = []
    for position in range(width):
        column = [row[position] for row in values]
        kinds = set(map(type, column))
        if kinds == {str} and _COPY_SPECIAL.search("".join(column)) is None:
            columns.append(column)
        elif kinds in ({int}, {float}):
            text = dict((number, str(number)) for number in set(column))
            columns.append(list(map(text.__getitem__, column)))
        else:
            columns.append(list(map(_encode_copy_value, column)))
    return "\n".join(map("\t".join, zip(*columns))) + "\n"


class StateDB(object):
    """A connection to the state database with one API for both dialects.

    Statements outside ``transaction()`` autocommit; inside, they commit or roll back together.
    """

    def __init__(self, state_db, password=None, connect_timeout=10):
        self.dialect, self.target = parse_state_db(state_db)
        self.display = state_db
        self._depth = 0
        self._rollback_on_close = False
        self._staging_tables = 0
        self._conn = self._connect(password, connect_timeout)

    # -- connection ---------------------------------------------------------------------
    def _connect(self, password, connect_timeout):
        if self.dialect == "sqlite":
            parent = os.path.dirname(self.target)
            try:
                if parent and not os.path.isdir(parent):
                    os.makedirs(parent, mode=0o700)
                conn = sqlite3.connect(self.target, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000.0, isolation_level=None)
                conn.execute("PRAGMA busy_timeout = %d" % SQLITE_BUSY_TIMEOUT_MS)
                _use_wal(conn)
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
            except (OSError, sqlite3.Error) as exc:
                raise StateError("cannot open the SQLite state database %s: %s" % (self.target, exc))
            conn.row_factory = sqlite3.Row
            return conn
        if not HAS_PSYCOPG2:
            raise MissingLibraryError(
                "psycopg2", "psycopg2-binary", reason="to use a postgresql:// state_db", exception=PSYCOPG2_IMPORT_ERROR
            )
        kwargs = {"connect_timeout": connect_timeout, "application_name": "scidata.replication"}
        if password:
            kwargs["password"] = password
        try:
            conn = psycopg2.connect(self.target, **kwargs)
        except psycopg2.Error as exc:
            raise StateError("cannot connect to the PostgreSQL state database %s: %s" % (self.display, _pg_message(exc)))
        conn.autocommit = True
        try:
            conn.cursor().execute("SET lock_timeout = %d" % PG_LOCK_TIMEOUT_MS)
        except psycopg2.Error as exc:
            conn.close()
            raise StateError("cannot set up the PostgreSQL state database %s: %s" % (self.display, _pg_message(exc)))
        return conn

    def close(self):
        if self._rollback_on_close:
            with contextlib.suppress(Exception):
                self._conn.cursor().execute("ROLLBACK")
        with contextlib.suppress(Exception):
            self._conn.close()

    # -- statements ---------------------------------------------------------------------
    def _cursor(self):
        return self._conn.cursor()

    def execute(self, sql, params=()):
        """Run one statement; returns the number of rows it changed."""
        cursor = self._run(sql, params)
        count = cursor.rowcount
        cursor.close()
        return count

    def query(self, sql, params=()):
        """Run a query; returns a list of dicts."""
        cursor = self._run(sql, params)
        columns = [d[0] for d in cursor.description]
        rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
        cursor.close()
        return rows

    def query_one(self, sql, params=()):
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql, params=()):
        cursor = self._run(sql, params)
        row = cursor.fetchone()
        cursor.close()
        return row[0] if row else None

    def _run(self, sql, params):
        cursor = self._cursor()
        try:
            if self.dialect == "postgresql":
                cursor.execute(to_pg_params(sql), tuple(params))
            else:
                cursor.execute(sql, tuple(params))
        except Exception as exc:
            cursor.close()
            raise self._error("statement failed", exc)
        return cursor

    def _error(self, what, exc):
        if isinstance(exc, sqlite3.Error) or (HAS_PSYCOPG2 and isinstance(exc, psycopg2.Error)):
            return StateError("state database %s: %s: %s" % (self.display, what, _pg_message(exc)))
        return exc

    @contextlib.contextmanager
    def transaction(self):
        """All statements inside commit together; nested use joins the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        try:
            # IMMEDIATE takes SQLite's write lock up front, so two writers queue on the busy
            # timeout instead of failing when a reader upgrades to a writer.
            self._conn.cursor().execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
        except Exception as exc:
            raise self._error("cannot begin a transaction", exc)
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            with contextlib.suppress(Exception):
                self._conn.cursor().execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            self._conn.cursor().execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._conn.cursor().execute("ROLLBACK")
            raise self._error("commit failed", exc)

    def begin_rollback_only(self):
        """Open a transaction that lasts until ``close()`` and is then rolled back: check mode
        runs the same statements as a real run and leaves nothing behind."""
        try:
            self._conn.cursor().execute("BEGIN")
        except Exception as exc:
            raise self._error("cannot begin a transaction", exc)
        self._depth = 1
        self._rollback_on_close = True

    def shadow_tables(self):
        """PostgreSQL, inside the rollback-only transaction: copy every table of the schema into
        a temporary table of the same name, which statements then reach first (``pg_temp`` comes
        first in the search path). Check mode then writes only to its own copies, so it holds no
        row lock that a real run would wait for, however long it talks to Globus."""
        schema = self.scalar("SELECT quote_ident(current_schema())")
        for row in self.query("SELECT quote_ident(tablename) AS name FROM pg_catalog.pg_tables "
                              "WHERE schemaname = current_schema() ORDER BY tablename"):
            self.execute("CREATE TEMP TABLE %s (LIKE %s.%s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
                         % (row["name"], schema, row["name"]))
            self.execute("INSERT INTO pg_temp.%s SELECT * FROM %s.%s" % (row["name"], schema, row["name"]))

    # -- bulk upsert --------------------------------------------------------------------
    def upsert(self, table, rows, key, update=None):
        """Insert ``rows`` (dicts with the same keys); on a ``key`` conflict update ``update``
        columns, or leave the existing row alone when ``update`` is empty.

        Rows repeating a key keep the last one (one statement cannot touch a row twice).
        Returns the number of rows inserted or updated.
        """
        if not rows:
            return 0
        columns = list(rows[0])
        key = list(key)
        update = list(update or [])
        unique = {}
        for row in rows:
            unique[tuple(row[k] for k in key)] = row
        values = [tuple(row[c] for c in columns) for row in unique.values()]
        if update:
            conflict = "DO UPDATE SET " + ", ".join("%s = excluded.%s" % (c, c) for c in update)
        else:
            conflict = "DO NOTHING"
        target = "INSERT INTO %s (%s) " % (table, ", ".join(columns))
        on_conflict = " ON CONFLICT (%s) %s" % (", ".join(key), conflict)
        with self.transaction():
            if self.dialect == "sqlite":
                return self._sqlite_upsert(target, columns, on_conflict, values)
            return self._pg_upsert(table, target, columns, on_conflict, values)

    def _sqlite_upsert(self, target, columns, on_conflict, values):
        before = self._conn.total_changes
        sql = target + "VALUES (%s)" % ", ".join("?" * len(columns)) + on_conflict
        try:
            self._conn.executemany(sql, values)
        except sqlite3.Error as exc:
            raise self._error("bulk upsert failed", exc)
        return self._conn.total_changes - before

    def _pg_upsert(self, table, target, columns, on_conflict, values):
        # COPY into a temporary table, then one INSERT ... ON CONFLICT: far fewer round trips
        # and less parsing than multi-row VALUES.
        # Unique per call: several upserts may share one outer transaction before the drop.
        self._staging_tables += 1
        staging = "_upsert_%s_%d" % (table, self._staging_tables)
        data = _copy_text(values, len(columns))
        cursor = self._cursor()
        try:
            cursor.execute(
                "CREATE TEMP TABLE %s ON COMMIT DROP AS SELECT %s FROM %s WITH NO DATA"
                % (staging, ", ".join(columns), table)
            )
            cursor.copy_expert("COPY %s (%s) FROM STDIN" % (staging, ", ".join(columns)), _StringReader(data))
            cursor.execute(target + "SELECT %s FROM %s" % (", ".join(columns), staging) + on_conflict)
            count = cursor.rowcount
        except psycopg2.Error as exc:
            raise self._error("bulk upsert failed", exc)
        finally:
            cursor.close()
        return count

    # -- schema -------------------------------------------------------------------------
    def schema_version(self):
        """The applied schema version, 0 for an empty database."""
        if self.dialect == "sqlite":
            exists = self.scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
        else:
            exists = self.scalar("SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'schema_version' "
                                 "AND schemaname = current_schema()")
        if not exists:
            return 0
        return self.scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version")

    def pending_migrations(self):
        current = self.schema_version()
        return [(v, d) for v, d, _statements in MIGRATIONS if v > current]

    def migrate(self):
        """Apply every pending migration; returns the versions applied by this call.

        The check is repeated under a lock that every migrating process takes, so a second
        process waits and then finds nothing to do.
        """
        if not self.pending_migrations():
            return []
        types = _DIALECTS[self.dialect]
        applied = []
        with self.transaction():
            if self.dialect == "postgresql":
                self.execute("SELECT pg_advisory_xact_lock(?)", (PG_MIGRATION_LOCK_KEY,))
            self.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at %s NOT NULL)" % types["float"]
            )
            current = self.schema_version()
            for version, description, statements in MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    self.execute(statement.format(**types))
                self.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (version, description, time.time()),
                )
                applied.append(version)
        return applied

    def integrity_ok(self):
        """SQLite's own integrity check; PostgreSQL guarantees this itself."""
        if self.dialect == "sqlite":
            return self.scalar("PRAGMA integrity_check") == "ok"
        return True


def _use_wal(conn):
    """Switch a SQLite file to WAL, waiting for other processes that hold it.

    WAL is a property of the file, so once any process has switched it there is nothing to
    do. The switch needs the file to itself and SQLite does not run the busy handler for it:
    several processes opening a new file at once retry here within the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000.0
    delay = 0.01
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
    while mode not in ("wal", "memory"):  # an in-memory database has no journal file to switch
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        if mode != "wal":
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError("database is locked: could not switch it to WAL")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class _StringReader(object):
    """The file-like object ``copy_expert`` reads from, without copying the text again."""

    def __init__(self, text):
        self._text = text
        self._pos = 0

    def read(self, size=-1):
        if size is None or size < 0:
            size = len(self._text) - self._pos
        chunk = self._text[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk


def _pg_message(exc):
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


def open_state(state_db, password=None, check_mode=False, connect_timeout=10):
    """Open the state database with its schema brought up to date.

    In check mode the run works on a private snapshot taken when it opens, the migrations
    included, so it writes nothing and holds no lock on the shared database while it plans:
    SQLite is copied into an in-memory database (an empty one when the file does not exist,
    which is then not created); PostgreSQL is copied into temporary tables inside a transaction
    that ``close()`` rolls back.
    """
    dialect, target = parse_state_db(state_db)
    if check_mode and dialect == "sqlite":
        db = StateDB(":memory:")
        db.display = state_db
        if os.path.exists(target):
            try:
                source = sqlite3.connect(target, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000.0)
                try:
                    source.backup(db._conn)  # one step: one read transaction, a consistent copy
                finally:
                    source.close()
            except sqlite3.Error as exc:
                db.close()
                raise StateError("cannot read the SQLite state database %s: %s" % (target, exc))
        db.migrate()
        return db
    db = StateDB(state_db, password=password, connect_timeout=connect_timeout)
    try:
        if check_mode:
            db.begin_rollback_only()
        db.migrate()
        if check_mode:
            db.shadow_tables()
    except Exception:
        db.close()
        raise
    return db
