# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The dashboard in real headless Chromium with the states that wait for the operator: PARTIAL
items with skipped files, a LOST task, a REJECTED request, next to the INACTIVE tasks of the
realistic database of test_replication_report."""

from __future__ import annotations

import json
import os

from ansible_collections.scidata.replication.plugins.module_utils._state import open_state
from dashboard_browser import DomReader, db_totals, load_dashboard
from test_replication_report import BASE, HOSTILE, HOUR, MODULE, OUTPUT, fill


def add_operator_states(db):
    """Two PARTIAL items (with the files their task skipped), one LOST task, one REJECTED request."""
    task_id = db.scalar("SELECT task_id FROM globus_tasks WHERE job = 'llnl-olcf' AND status = 'SUCCEEDED' "
                        "ORDER BY submission_id LIMIT 1")
    submission_id = db.scalar("SELECT submission_id FROM globus_tasks WHERE task_id = ?", (task_id,))
    partial = db.query("SELECT id, source_path FROM transfer_items WHERE route = 'llnl-olcf' AND status = 'SUCCEEDED' "
                       "ORDER BY id LIMIT 2")
    for row in partial:
        db.execute("UPDATE transfer_items SET status = 'PARTIAL', submission_id = ?, last_error = ? WHERE id = ?",
                   (submission_id, "1 file(s) skipped, not at the destination: %sa.nc (PERMISSION_DENIED) %s"
                    % (row["source_path"], HOSTILE), row["id"]))
        db.upsert("task_files", [dict(task_id=task_id, kind="skipped", source_path=row["source_path"] + "a.nc",
                                      error_code="PERMISSION_DENIED")], key=["task_id", "kind", "source_path"])
    db.execute("UPDATE globus_tasks SET status = 'LOST', nice_status = 'not visible to this identity' "
               "WHERE task_id = (SELECT MIN(task_id) FROM globus_tasks WHERE job = 'alcf-olcf' AND status = 'ACTIVE')")
    db.upsert("globus_tasks", [dict(
        submission_id="sub-rejected", task_id=None, job="llnl-alcf", kind="transfer", label="llnl-alcf refused",
        source_endpoint="src", destination_endpoint="dst", request="{}", status="REJECTED",
        fatal_error=json.dumps({"code": "BadRequest", "description": "No such path " + HOSTILE}),
        created_at=BASE - 2 * HOUR, updated_at=BASE - 2 * HOUR)], key=["submission_id"])


def test_operator_states_in_headless_chromium(ansible, tmp_path):
    url = str(tmp_path / "state.db")
    db = open_state(url)
    try:
        fill(db)
        add_operator_states(db)
        expected = db_totals(db)
        expected.update(
            failing=db.scalar("SELECT count(*) FROM transfer_items WHERE status IN ('FAILED', 'PARTIAL')"),
            partial=2, items_partial=2, tasks_lost=1, submissions_rejected=1,
            tasks_inactive=db.scalar("SELECT count(*) FROM globus_tasks WHERE status = 'INACTIVE'"))
        inactive = [(r["job"], "INACTIVE", str(r["n"])) for r in db.query(
            "SELECT job, count(*) AS n FROM globus_tasks WHERE status = 'INACTIVE' GROUP BY job ORDER BY job")]
        paused = [(r["job"], "PAUSED", str(r["n"])) for r in db.query(
            "SELECT job, count(*) AS n FROM globus_tasks WHERE status IN ('ACTIVE', 'INACTIVE') AND is_paused = 1 "
            "GROUP BY job ORDER BY job")]
    finally:
        db.close()
    dest = str(tmp_path / "www" / "replication")
    result, _out = ansible.run(MODULE, {"state_db": url, "dest": dest, "lock_file": str(tmp_path / "report.lock")})
    assert result["changed"] and not result.get("failed"), result
    assert (result["totals"]["items_partial"], result["totals"]["tasks_lost"],
            result["totals"]["submissions_rejected"]) == (2, 1, 1)

    reader = load_dashboard(dest, str(tmp_path), os.path.join(OUTPUT, "dashboard-states.png"), expected)
    text = " ".join(" ".join(reader.text).split())
    assert "Needs attention" in text and "No such path " + HOSTILE in text
    assert "scidata.replication.globus_login" in text and "routes.<name>.partial_items" in text
    with open(os.path.join(OUTPUT, "dashboard-states-dom.html"), encoding="utf-8") as handle:
        dom = DomRows()
        dom.feed(handle.read())
    assert ("llnl-olcf", "PARTIAL", "2") in dom.attention and ("alcf-olcf", "LOST", "1") in dom.attention
    assert ("llnl-alcf", "REJECTED", "1") in dom.attention
    assert inactive and [row for row in dom.attention if row[1] == "INACTIVE"] == inactive
    assert paused and [row for row in dom.attention if row[1] == "PAUSED"] == paused


class DomRows(DomReader):
    """The rows of the needs attention table, as Chromium built them."""

    def __init__(self):
        super().__init__()
        self.attention = []

    def handle_starttag(self, tag, attrs):
        super().handle_starttag(tag, attrs)
        attrs = dict(attrs)
        if "data-attention" in attrs:
            self.attention.append((attrs["data-route"], attrs["data-attention"], attrs["data-count"]))
