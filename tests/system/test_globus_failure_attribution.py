# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A failed task whose error events name a file charges the failure to the item holding that
file only. Real ansible-playbook runs against the API emulator."""

from __future__ import annotations

import os

import pytest

from globus_setup import DST, SRC
from test_globus_unattended import db_rows, make_datasets, run, settle


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()


def items(state_db):
    return dict((r["source_path"], r) for r in db_rows(
        state_db, "SELECT source_path, status, attempts, last_error FROM transfer_items"))


def test_failure_named_by_an_event_is_charged_to_its_item_only(ansible, emulator, tmp_path):
    state_db = str(tmp_path / "state.db")
    healthy, = make_datasets(emulator, 1)
    missing = healthy.replace("ds0", "never-there")
    args = {"state_db": state_db, "items_per_task": 2, "max_attempts": 1, "retry_backoff": 0,
            "routes": [{"name": "r", "source_collection": SRC, "items": [healthy, missing],
                        "destinations": [{"collection": DST, "prefix": "/attrib"}]}]}
    first = run(ansible, emulator, "globus_transfer", args)
    assert [t["items"] for t in first["tasks"]] == [2]
    task_id = first["tasks"][0]["task_id"]
    settle(ansible, emulator, state_db)
    assert db_rows(state_db, "SELECT status FROM globus_tasks WHERE task_id = ?", (task_id,))[0]["status"] == "FAILED"
    after_failure = items(state_db)
    bad, good = after_failure["/" + missing], after_failure["/" + healthy]
    assert (bad["status"], bad["attempts"]) == ("FAILED", 1)
    assert "FILE_NOT_FOUND" in bad["last_error"] and missing in bad["last_error"]
    # The healthy item is not charged: no attempt used, not the missing path's error.
    assert (good["status"], good["attempts"]) == ("FAILED", 0)
    assert missing not in good["last_error"] and good["last_error"].startswith("not charged")

    retried = run(ansible, emulator, "globus_transfer", args)
    assert [(t["items"], t["sync_level"]) for t in retried["tasks"]] == [(1, "checksum")]
    settle(ansible, emulator, state_db)
    final = items(state_db)
    assert (final["/" + healthy]["status"], final["/" + healthy]["last_error"]) == ("SUCCEEDED", None)
    assert os.path.isfile(str(emulator.root / "dst" / "attrib" / healthy / "a.nc"))
    assert (final["/" + missing]["status"], final["/" + missing]["attempts"]) == ("FAILED", 1)
    done = run(ansible, emulator, "globus_transfer", args)
    assert done["tasks"] == [] and [i["source"] for i in done["routes"]["r"]["failed_items"]] == ["/" + missing]
    assert done["changed"] is False


def test_failure_no_event_names_is_charged_to_every_item(ansible, emulator, tmp_path):
    state_db = str(tmp_path / "state.db")
    first_set, second_set = make_datasets(emulator, 2)
    args = {"state_db": state_db, "items_per_task": 2, "max_attempts": 1, "retry_backoff": 0,
            "routes": [{"name": "r", "source_collection": SRC, "items": [first_set, second_set],
                        "destinations": [{"collection": DST, "prefix": "/attrib"}]}]}
    emulator.add_fault(kind="fail", code="ENDPOINT_ERROR", count=1, details="Lost the connection to the collection")
    run(ansible, emulator, "globus_transfer", args)
    settle(ansible, emulator, state_db)
    assert sorted((r["status"], r["attempts"]) for r in items(state_db).values()) == [("FAILED", 1), ("FAILED", 1)]
