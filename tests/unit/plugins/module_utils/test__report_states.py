# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The dashboard and the states that wait for the operator: PARTIAL items, INACTIVE and LOST
tasks, REJECTED requests, written by the transfer layer itself on both backends."""

from __future__ import annotations

import html.parser
import json

import pytest

from ansible_collections.scidata.replication.plugins.module_utils import _report, _transfers
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state

H = 3600.0
T0 = 1777593600.0 - 10 * H  # an hour boundary
ITEM_KEY = ["route", "source_path", "destination_collection", "destination_path"]
REFUSAL = "Path /forbidden/<x> is not allowed on this collection"


@pytest.fixture
def db(state_db_url):
    database = open_state(state_db_url)
    yield database
    database.close()


def submission(n, route, status, begin, task_id=True, **extra):
    row = dict(submission_id="s%d" % n, task_id="t%d" % n if task_id else None, job=route, kind="transfer",
               label="label %d" % n, source_endpoint="src", destination_endpoint="dst-" + route, request="{}",
               status=status, is_paused=0, files=4, files_transferred=0, bytes_transferred=0, faults=0,
               request_time=begin if task_id else None, completion_time=None, fatal_error=None, created_at=begin,
               submitted_at=begin if task_id else None, updated_at=begin)
    row.update(extra)
    return row


def item(n, route, submission_id, path=None):
    return dict(route=route, source_collection="src", source_path=path or "/d/%d" % n,
                destination_collection="dst-" + route, destination_path="/r/%d" % n, status="ACTIVE",
                submission_id=submission_id, attempts=1, created_at=T0 - 5 * H, updated_at=T0 - 2 * H)


def skipped(path, code="PERMISSION_DENIED"):
    return dict(source_path=path, destination_path="/r" + path, error_code=code, error_details="denied")


def operator_states(db):
    """Route a: one PARTIAL item (2 skipped files under it), one SUCCEEDED item of the same task, one
    LOST task. Route b: one INACTIVE task and one request the service refused."""
    db.upsert("globus_tasks", [
        submission(1, "a", "ACTIVE", T0 - 3 * H),
        submission(2, "a", "ACTIVE", T0 - 2 * H),
        submission(3, "b", "INACTIVE", T0 - 2 * H, nice_status="CREDENTIAL_EXPIRED"),
        submission(4, "b", "UNSUBMITTED", T0 - H, task_id=False),
    ], key=["submission_id"])
    db.upsert("transfer_items", [item(1, "a", "s1", "/d/1/"), item(2, "a", "s1"), item(3, "a", "s2"),
                                 item(4, "b", "s3"), item(5, "b", "s4")], key=ITEM_KEY)
    document = dict(task_id="t1", status="SUCCEEDED")
    _transfers.settle_items(db, "s1", document, T0 - H,
                            skipped=[skipped("/d/1/x/f1"), skipped("/d/1/f2", "FILE_NOT_FOUND")])
    db.execute("UPDATE globus_tasks SET status = 'SUCCEEDED', completion_time = ?, updated_at = ? WHERE task_id = 't1'",
               (T0 - H, T0 - H))
    assert _transfers.mark_lost(db, "t2", T0)
    # What post_submission records for a refused request, with the message of the service.
    db.execute("UPDATE globus_tasks SET status = 'REJECTED', fatal_error = ?, updated_at = ? WHERE submission_id = 's4'",
               (json.dumps(dict(code="BadRequest", description=REFUSAL)), T0 - 0.5 * H))
    _transfers.reject_items(db, "s4", REFUSAL)
    # reject_items stamps the wall clock; the data here stays in its own time frame.
    db.execute("UPDATE transfer_items SET updated_at = ? WHERE submission_id = 's4'", (T0 - 0.5 * H,))


class Rows(html.parser.HTMLParser):
    """Attributes of every element carrying one of the data-* attributes the page marks rows with."""

    def __init__(self):
        super().__init__()
        self.elements = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page):
    parser = Rows()
    parser.feed(page)
    return parser.elements, " ".join(" ".join(parser.text).split())


def test_states_are_counted_per_route_and_in_totals(db):
    operator_states(db)
    summary = _report.collect(db)["summary.json"]
    routes = dict((r["name"], r) for r in summary["routes"])
    assert (routes["a"]["items_partial"], routes["a"]["items_done"], routes["a"]["items_failed"]) == (1, 1, 1)
    assert (routes["a"]["tasks_lost"], routes["a"]["tasks_inactive"], routes["a"]["submissions_rejected"]) == (1, 0, 0)
    assert (routes["b"]["tasks_lost"], routes["b"]["tasks_inactive"], routes["b"]["submissions_rejected"]) == (0, 1, 1)
    assert (routes["b"]["items_active"], routes["b"]["items_failed"]) == (1, 1)
    totals = summary["totals"]
    assert (totals["items_partial"], totals["tasks_lost"], totals["tasks_inactive"], totals["submissions_rejected"]) \
        == (1, 1, 1, 1)
    assert totals["tasks"] == 3  # the refused request never became a task
    sites = dict((r["name"], r) for r in summary["sites"])
    assert sites["dst-b"]["submissions_rejected"] == 1 and sites["dst-a"]["items_partial"] == 1


def test_partial_items_are_listed_with_their_skipped_files(db):
    operator_states(db)
    failing = _report.collect(db)["items_failing.json"]
    assert (failing["total"], failing["partial"]) == (3, 1)
    by_path = dict((i["source_path"], i) for i in failing["items"])
    partial = by_path["/d/1/"]
    assert partial["status"] == "PARTIAL" and partial["files_skipped"] == 2
    assert partial["last_error"].startswith("2 file(s) skipped") and "/d/1/f2 (FILE_NOT_FOUND)" in partial["last_error"]
    assert by_path["/d/3"]["status"] == "FAILED" and "LOST" in by_path["/d/3"]["last_error"]
    assert by_path["/d/5"]["last_error"] == "rejected: " + REFUSAL and by_path["/d/5"]["files_skipped"] is None
    assert "/d/2" not in by_path  # the other item of the task has no skip under it: SUCCEEDED


def test_rejected_requests_are_listed_with_the_message_of_the_service(db):
    operator_states(db)
    tasks = _report.collect(db)["tasks.json"]
    assert [(r["submission_id"], r["job"], r["kind"]) for r in tasks["rejected"]] == [("s4", "b", "transfer")]
    assert tasks["rejected"][0]["fatal_error"] == "BadRequest: " + REFUSAL
    assert tasks["rejected"][0]["updated_at"] == _report.iso(T0 - 0.5 * H)
    assert [k["status"] for k in tasks["tasks"] if k["task_id"] == "t2"] == ["LOST"]


def test_a_lost_task_stops_counting_as_active_when_it_is_marked(db):
    operator_states(db)
    db.execute("UPDATE globus_tasks SET status = 'SUCCEEDED', completion_time = ?, updated_at = ? WHERE task_id = 't3'",
               (T0 - 1.5 * H, T0 - 1.5 * H))
    db.upsert("sync_jobs", [dict(name="j", kind="dir_trie_sync", updated_at=T0 + 2 * H)], key=["name"])
    data = _report.collect(db, history_hours=5)["progress.json"]
    assert data["hours"] == [_report.iso(T0 + h * H) for h in range(-2, 3)]
    # t1 ran from T0 - 3 h to T0 - 1 h, t3 in hour T0 - 2 h, t2 from T0 - 2 h until it was marked LOST at T0.
    assert data["tasks_active"] == [3, 2, 1, 0, 0]


def test_the_page_puts_the_states_first_with_what_to_do(db):
    operator_states(db)
    page = _report.render_site(_report.collect(db))["index.html"].decode("utf-8")
    elements, text = parse(page)
    attention = [(a["data-route"], a["data-attention"], a["data-count"]) for tag, a in elements if "data-attention" in a]
    assert attention == [("a", "PARTIAL", "1"), ("b", "INACTIVE", "1"), ("a", "LOST", "1"), ("b", "REJECTED", "1")]
    assert page.index('id="attention"') < page.index('id="routes"') < page.index('id="failing"')
    for _field, state, _css, action in _report.ATTENTION:
        assert (" ".join(action.split()) in text) == (state != "PAUSED"), state
    assert "scidata.replication.globus_login" in text and "data_access_collections" in text
    partial_column = [(a["data-field"], a["data-value"]) for tag, a in elements if a.get("data-field") == "items_partial"]
    assert partial_column == [("items_partial", "1"), ("items_partial", "0")] * 2  # routes a, b; sites dst-a, dst-b
    warned = [a["data-total"] for tag, a in elements if a.get("data-total") in dict(_report.CARDS)]
    assert {"items_partial", "tasks_lost", "tasks_inactive", "submissions_rejected"} <= set(warned)
    assert page.count('class="card warn"') == 4
    classes = [a["class"] for tag, a in elements if tag == "span" and a.get("class", "").startswith("s ")]
    assert {"s partial", "s lost", "s rejected", "s inactive"} <= set(classes) and "s other" not in classes
    assert [a["data-rejected"] for tag, a in elements if "data-rejected" in a] == ["s4"]
    assert "BadRequest: " + REFUSAL in text  # escaped in the page, shown as the text it is
    assert [a["data-item-status"] for tag, a in elements if "data-item-status" in a].count("PARTIAL") == 1


def test_no_attention_section_when_nothing_waits(db):
    db.upsert("globus_tasks", [submission(1, "a", "SUCCEEDED", T0)], key=["submission_id"])
    page = _report.render_site(_report.collect(db))["index.html"].decode("utf-8")
    assert 'id="attention"' not in page and "card warn" not in page and "Needs attention" not in page


def test_a_paused_task_is_shown_with_what_to_do(db):
    rule = "Storage maintenance until Monday <b>08:00</b>"
    db.upsert("globus_tasks", [
        submission(1, "a", "ACTIVE", T0, is_paused=1, nice_status="PAUSED_BY_ADMIN", pause_reason=rule),
        submission(2, "a", "SUCCEEDED", T0, is_paused=1, nice_status="OK", pause_reason=None)], key=["submission_id"])
    page = _report.render_site(_report.collect(db))["index.html"].decode("utf-8")
    elements, text = parse(page)
    assert [(a["data-route"], a["data-attention"], a["data-count"]) for tag, a in elements
            if "data-attention" in a] == [("a", "PAUSED", "1")]
    assert "pause rule" in text and page.count('class="card warn"') == 1
    assert [a["data-pause-reason"] for tag, a in elements if "data-pause-reason" in a] == ["t1"]
    assert rule in text and "<b>" not in page
