# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Claiming items for a task and the identity-wide task budget, on both real backends."""

from __future__ import annotations

import time

from ansible_collections.scidata.replication.plugins.module_utils import _transfers
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state

POLICY = dict(max_active_tasks=3, identity_max_open_tasks=5, items_per_task=2, max_attempts=5, retry_backoff=600,
              retry_backoff_max=86400)
ROUTE = dict(name="r", source_collection="src", items=["a/", "b/", "c/", "d/"], destinations=[dict(collection="dst")])


def open_task(db, number, job, status="ACTIVE"):
    now = time.time()
    db.execute("INSERT INTO globus_tasks (submission_id, task_id, job, source_endpoint, destination_endpoint, request, "
               "status, created_at, updated_at) VALUES (?, ?, ?, 'src', 'dst', '{}', ?, ?, ?)",
               ("sub-%s-%d" % (job, number), "task-%s-%d" % (job, number), job, status, now, now))


def test_items_planned_by_two_runs_are_claimed_by_one(state_db_url):
    first, second = open_state(state_db_url), open_state(state_db_url)
    try:
        now = time.time()
        _transfers.register_items(first, _transfers.item_rows(ROUTE, now))
        plan_one = _transfers.eligible_items(first, ROUTE, 4, now, POLICY)
        plan_two = _transfers.eligible_items(second, ROUTE, 4, now, POLICY)
        assert [i["id"] for i in plan_one] == [i["id"] for i in plan_two]
        with first.transaction():
            claimed, reason, waiting = _transfers.claim_items(first, ROUTE, plan_one[:3], POLICY, now)
        assert [i["source_path"] for i in claimed] == ["/a/", "/b/", "/c/"] and reason is None and not waiting
        with second.transaction():
            claimed, reason, waiting = _transfers.claim_items(second, ROUTE, plan_two, POLICY, now)
        assert [i["source_path"] for i in claimed] == ["/d/"]  # the only one the first run left
        with second.transaction():
            claimed, reason, waiting = _transfers.claim_items(second, ROUTE, plan_two[:1], POLICY, now)
        assert claimed == [] and "another run" in reason and not waiting
        rows = first.query("SELECT source_path, status, attempts FROM transfer_items ORDER BY source_path")
        assert [(r["status"], r["attempts"]) for r in rows] == [("ACTIVE", 1)] * 4
    finally:
        first.close()
        second.close()


def test_a_failed_item_retried_meanwhile_is_not_claimed_again(state_db_url):
    db = open_state(state_db_url)
    try:
        now = time.time()
        _transfers.register_items(db, _transfers.item_rows(dict(ROUTE, items=["a/"]), now))
        db.execute("UPDATE transfer_items SET status = 'FAILED', attempts = 1, updated_at = ?", (now - 3600,))
        planned = _transfers.eligible_items(db, ROUTE, 1, now, POLICY)
        assert [(i["status"], i["attempts"]) for i in planned] == [("FAILED", 1)]
        # Another run retried it and it failed again since this plan was made.
        db.execute("UPDATE transfer_items SET attempts = 2")
        with db.transaction():
            claimed, _reason, _waiting = _transfers.claim_items(db, ROUTE, planned, POLICY, now)
        assert claimed == []
        assert db.query_one("SELECT status, attempts FROM transfer_items") == dict(status="FAILED", attempts=2)
    finally:
        db.close()


def test_the_task_budget_counts_every_job_sharing_the_database(state_db_url):
    db = open_state(state_db_url)
    try:
        now = time.time()
        _transfers.register_items(db, _transfers.item_rows(ROUTE, now))
        for number in range(3):
            open_task(db, number, "other-route")
        open_task(db, 0, "a-dir-trie-sync-job", status="INACTIVE")
        open_task(db, 0, "finished-job", status="SUCCEEDED")
        assert _transfers.identity_open_tasks(db) == 4
        batches, reason, waiting = _transfers.plan_route(db, ROUTE, POLICY, 10, now)
        assert len(batches) == 1 and reason is None and not waiting  # one slot left of five
        open_task(db, 1, "a-dir-trie-sync-job")
        batches, reason, waiting = _transfers.plan_route(db, ROUTE, POLICY, 10, now)
        assert batches == [] and waiting and "5 of 5 open tasks" in reason
        planned = _transfers.eligible_items(db, ROUTE, 2, now, POLICY)
        with db.transaction():
            claimed, reason, waiting = _transfers.claim_items(db, ROUTE, planned, POLICY, now)
        assert claimed == [] and waiting
        assert db.scalar("SELECT count(*) FROM transfer_items WHERE status = 'PENDING'") == 4
    finally:
        db.close()
