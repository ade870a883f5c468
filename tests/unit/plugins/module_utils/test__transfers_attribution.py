# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Settling a failed transfer task: the error events that name a file, in the shape the Transfer
service writes their details, charge the failure to the items holding that file."""

from __future__ import annotations

import pytest

from ansible_collections.scidata.replication.plugins.module_utils import _transfers
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state

NOW = 1777593600.0
ITEM_KEY = ["route", "source_path", "destination_collection", "destination_path"]


@pytest.fixture
def db(state_db_url):
    database = open_state(state_db_url)
    yield database
    database.close()


def service_details(path, message):
    return ("Error (transfer)\nEndpoint: Source (0a1b)\nServer: gridftp.example.org:2811\nFile: %s\n"
            "Command: RETR %s\nMessage: %s\n---\nDetails: 500 Command failed\n" % (path, path, message))


def failed_task(db, events):
    db.upsert("globus_tasks", [dict(submission_id="s1", task_id="t1", job="r", kind="transfer", label="l",
                                    source_endpoint="src", destination_endpoint="dst", request="{}", status="ACTIVE",
                                    is_paused=0, created_at=NOW, updated_at=NOW)], key=["submission_id"])
    db.upsert("transfer_items", [dict(route="r", source_collection="src", source_path=path,
                                      destination_collection="dst", destination_path="/copy" + path, status="ACTIVE",
                                      submission_id="s1", attempts=1, created_at=NOW, updated_at=NOW)
                                 for path in ("/data/good/", "/data/bad/", "/data/other.nc")], key=ITEM_KEY)
    documents = [dict(time="2026-05-01T00:00:00+00:00", code=code, is_error=True, description=code.lower(), details=details)
                 for code, details in events]
    db.upsert("task_events", _transfers.event_rows("t1", documents), key=["task_id", "fingerprint"])
    with db.transaction():
        _transfers.settle_items(db, "s1", dict(task_id="t1", status="FAILED", fatal_error=dict(
            code="FILE_NOT_FOUND", description="file not found")), NOW)
    return dict((r["source_path"], (r["status"], r["attempts"], r["last_error"])) for r in db.query(
        "SELECT source_path, status, attempts, last_error FROM transfer_items"))


def test_events_of_the_fatal_code_charge_the_items_they_name(db):
    items = failed_task(db, [
        ("ENDPOINT_TOO_BUSY", service_details("/data/good/x.nc", "busy, retried")),  # not the fatal code
        ("FILE_NOT_FOUND", service_details("/data/bad/y.nc", "No such file or directory")),
        ("FILE_NOT_FOUND", service_details("/copy/data/other.nc", "No such file or directory")),  # destination side
    ])
    assert items["/data/bad/"] == ("FAILED", 1, "FILE_NOT_FOUND: file not found (/data/bad/y.nc)")
    assert items["/data/other.nc"] == ("FAILED", 1, "FILE_NOT_FOUND: file not found (/copy/data/other.nc)")
    assert items["/data/good/"][:2] == ("FAILED", 0) and items["/data/good/"][2].startswith("not charged: task t1")


def test_events_naming_no_item_charge_every_item(db):
    items = failed_task(db, [("FILE_NOT_FOUND", service_details("/elsewhere/z.nc", "No such file or directory")),
                             ("FILE_NOT_FOUND", "No such file or directory")])
    assert set(items.values()) == {("FAILED", 1, "FILE_NOT_FOUND: file not found")}
