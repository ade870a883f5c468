# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check mode plans on a snapshot and never holds a lock a real run would wait for; PostgreSQL
statements give up on a lock after a bounded wait."""

from __future__ import annotations

import threading
import time

from ansible_collections.scidata.replication.plugins.module_utils import _state
from ansible_collections.scidata.replication.plugins.module_utils._errors import StateError
from ansible_collections.scidata.replication.plugins.module_utils._state import StateDB, open_state

ITEM_KEY = ["route", "source_path", "destination_collection", "destination_path"]


def item(n, status="PENDING"):
    return dict(route="r", source_collection="src", source_path="/data/%d" % n, destination_collection="dst",
                destination_path="/replica/%d" % n, status=status, created_at=1.0, updated_at=1.0)


def in_thread(work, seconds):
    """Run ``work`` in a thread; returns (finished within ``seconds``, its error or None)."""
    outcome = {}

    def target():
        try:
            work()
        except Exception as exc:  # reported to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), outcome.get("error"), thread


def test_check_mode_writes_its_snapshot_while_a_real_run_writes_the_database(state_db_url):
    real = open_state(state_db_url)
    real.upsert("transfer_items", [item(1), item(2)], key=ITEM_KEY)
    check = open_state(state_db_url, check_mode=True)
    try:
        assert check.execute("UPDATE transfer_items SET status = 'SUCCEEDED' WHERE source_path = '/data/1'") == 1
        check.upsert("transfer_items", [item(3)], key=ITEM_KEY)

        def real_run():
            other = StateDB(state_db_url)  # SQLite connections stay in their thread
            try:
                with other.transaction():
                    other.execute("UPDATE transfer_items SET status = 'ACTIVE' WHERE source_path = '/data/1'")
                    other.upsert("transfer_items", [item(4)], key=ITEM_KEY)
            finally:
                other.close()

        finished, error, _thread = in_thread(real_run, 5)
        assert finished and error is None, error  # not held up by the check run's writes
        # Each sees its own writes: the check run its snapshot, the real run the database.
        assert check.query("SELECT source_path, status FROM transfer_items ORDER BY source_path") == [
            dict(source_path="/data/1", status="SUCCEEDED"), dict(source_path="/data/2", status="PENDING"),
            dict(source_path="/data/3", status="PENDING")]
    finally:
        check.close()
    assert real.query("SELECT source_path, status FROM transfer_items ORDER BY source_path") == [
        dict(source_path="/data/1", status="ACTIVE"), dict(source_path="/data/2", status="PENDING"),
        dict(source_path="/data/4", status="PENDING")]
    real.close()


def test_postgresql_statements_give_up_waiting_for_a_lock(postgres, monkeypatch):
    url = postgres.create_database("t_lock_timeout")
    holder = open_state(url)
    holder.upsert("transfer_items", [item(1)], key=ITEM_KEY)
    monkeypatch.setattr(_state, "PG_LOCK_TIMEOUT_MS", 500)
    waiter = StateDB(url)
    thread = None
    try:
        with holder.transaction():
            holder.execute("UPDATE transfer_items SET status = 'ACTIVE'")
            started = time.monotonic()
            finished, error, thread = in_thread(lambda: waiter.execute("UPDATE transfer_items SET attempts = 1"), 10)
            assert finished and isinstance(error, StateError) and "lock timeout" in error.msg, error
            assert time.monotonic() - started < 5
    finally:
        if thread is not None:
            thread.join(10)
        waiter.close()
        holder.close()
