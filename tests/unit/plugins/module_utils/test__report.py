# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The dashboard core: SQL aggregates on both backends, charts, escaping, atomic publishing."""

from __future__ import annotations

import html.parser
import json
import os
import sys
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.scidata.replication.plugins.module_utils import _report
from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError, MissingLibraryError
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state

H = 3600.0
T0 = 1777593600.0 - 10 * H  # an hour boundary
HOSTILE = "<script>alert(1)</script>"
ITEM_KEY = ["route", "source_path", "destination_collection", "destination_path"]


@pytest.fixture
def db(state_db_url):
    database = open_state(state_db_url)
    yield database
    database.close()


def task(n, job, status, begin, end=None, moved=0, **extra):
    row = dict(submission_id="s%d" % n, task_id="t%d" % n, job=job, label="label %d" % n, source_endpoint="src",
               destination_endpoint="dst-" + job, request="{}", status=status, is_paused=0, files=10,
               files_transferred=10 if status == "SUCCEEDED" else 3, bytes_transferred=moved,
               effective_bytes_per_second=1000, faults=1, request_time=begin, completion_time=end,
               fatal_error=None, created_at=begin, submitted_at=begin, updated_at=end or begin)
    row.update(extra)
    return row


def event(task_id, time, code="PROGRESS", moved=None, error=False, n=0):
    return dict(task_id=task_id, time=time, code=code, is_error=1 if error else 0, description=code.lower(),
                details="{}", bytes=moved, mbps=1.0, duration=60.0, fingerprint="%s-%s-%d" % (task_id, time, n))


def item(n, route, status, error=None, updated=T0):
    return dict(route=route, source_collection="src", source_path="/d/%d" % n, destination_collection="dst-" + route,
                destination_path="/r/%d" % n, status=status, attempts=2 if status == "FAILED" else 0,
                last_error=error, created_at=T0 - 5 * H, updated_at=updated)


def small_db(db):
    """Two routes with known numbers; the newest recorded time is T0 + 2.5 h (window ends at T0 + 3 h)."""
    db.upsert("globus_tasks", [
        task(1, "a", "SUCCEEDED", T0 - 2 * H + 60, T0 - 0.5 * H, moved=700),      # active hours -2, -1
        task(2, "a", "ACTIVE", T0 + 0.5 * H, None, moved=50, updated_at=T0 + 2.5 * H),  # active 0 .. end
        task(3, "b", "FAILED", T0 - 30 * H, T0 + 1.2 * H, moved=0,                  # started before the window
             fatal_error=json.dumps({"code": "PERMISSION_DENIED", "description": HOSTILE})),
        task(4, "b", "SUCCEEDED", T0 + 1.1 * H, T0 + 1.9 * H, moved=4000),          # no PROGRESS: completion hour
        task(5, "a", "SUCCEEDED", T0 - 40 * H, T0 - 39 * H, moved=9),               # entirely before the window
        dict(task(6, "a", "UNSUBMITTED", T0), task_id=None),                        # never submitted: not counted
    ], key=["submission_id"])
    db.upsert("task_events", [
        event("t1", T0 - 2 * H + 120, moved=100), event("t1", T0 - 2 * H + 900, moved=200),
        event("t1", T0 - 1 * H + 10, moved=400), event("t1", T0 - 1 * H + 20, "CONNECTION_RESET", error=True),
        event("t2", T0 + 0.6 * H, moved=50), event("t2", T0 + 0.7 * H, "STARTED"),
        event("t3", T0 + 1.1 * H, "PERMISSION_DENIED", error=True), event("t3", T0 + 1.15 * H, "X", error=True, n=1),
        event("t5", T0 - 39.5 * H, moved=9),
    ], key=["task_id", "fingerprint"])
    db.upsert("transfer_items", [item(1, "a", "SUCCEEDED"), item(2, "a", "ACTIVE"), item(3, "a", "PENDING"),
                                 item(4, "b", "FAILED", error="E1 " + HOSTILE, updated=T0 + H),
                                 item(5, "b", "FAILED", error="E2", updated=T0 + 2 * H),
                                 item(6, "c", "PENDING")], key=ITEM_KEY)
    db.upsert("epns", [dict(epn="EPN1", state="synced", bytes_transferred=10, last_synced_at=T0, created_at=T0,
                            updated_at=T0),
                       dict(epn="EPN2", state="failed", bytes_transferred=None, last_synced_at=None, created_at=T0,
                            updated_at=T0 - H),
                       dict(epn="EPN3", state="pending", bytes_transferred=None, last_synced_at=None, created_at=T0,
                            updated_at=T0 - 2 * H)], key=["epn"])
    db.upsert("rsync_attempts", [
        dict(id=1, epn="EPN2", host="h", started_at=T0 - 3 * H, ended_at=T0 - 3 * H + 60, rc=12, bytes=1, files=1,
             stderr_tail="old"),
        dict(id=2, epn="EPN2", host="h", started_at=T0 - 2 * H, ended_at=T0 - 2 * H + 60, rc=23, bytes=2, files=1,
             stderr_tail="x" * 1000 + HOSTILE),
        dict(id=3, epn="EPN1", host="h", started_at=T0 - 100 * H, ended_at=T0 - 100 * H + 5, rc=0, bytes=10, files=3,
             stderr_tail=""),
    ], key=["id"])
    db.upsert("sync_jobs", [dict(name="j1", kind="dir_trie_sync", source="/data", last_run_at=T0, last_scan_at=T0,
                                 files_indexed=10, files_pending=4, last_result=json.dumps({"ok": HOSTILE}),
                                 updated_at=T0),
                            dict(name="j0", kind="dir_trie_sync", source=None, last_run_at=None, last_scan_at=None,
                                 files_indexed=None, files_pending=None, last_result="plain text", updated_at=T0)],
              key=["name"])


# -- queries on both backends ---------------------------------------------------------------
def test_hour_bucket_on_both_dialects(db):
    db.upsert("globus_tasks", [task(1, "a", "ACTIVE", T0)], key=["submission_id"])
    db.upsert("task_events", [event("t1", T0 + 3599.9), event("t1", T0 + 3600.0), event("t1", T0 + 0.5)],
              key=["task_id", "fingerprint"])
    hours = [r["h"] for r in db.query("SELECT %s AS h FROM task_events ORDER BY time" % _report.hour_bucket(db, "time"))]
    base = int(T0 // 3600)
    assert hours == [base, base, base + 1] and all(isinstance(h, int) for h in hours)


def test_empty_database_renders_a_valid_site(db):
    data = _report.collect(db)
    assert data["summary.json"]["as_of"] is None and data["progress.json"]["hours"] == []
    assert data["summary.json"]["totals"]["items_total"] == 0 and data["summary.json"]["routes"] == []
    files = _report.render_site(data)
    assert sorted(files) == sorted(_report.SITE_FILES)
    for name, content in files.items():
        if name.endswith(".json"):
            json.loads(content)
    page = files["index.html"].decode("utf-8")
    assert "No data yet" in page and page.count("<svg") == 2 and "Nothing recorded yet" in page


def test_totals_routes_and_sites(db):
    small_db(db)
    summary = _report.collect(db)["summary.json"]
    assert summary["as_of"] == _report.iso(T0 + 2.5 * H)
    t = summary["totals"]
    assert (t["items_total"], t["items_done"], t["items_active"], t["items_failed"], t["items_pending"]) == (6, 1, 1, 2, 2)
    assert (t["tasks"], t["tasks_succeeded"], t["tasks_active"], t["tasks_failed"]) == (5, 3, 1, 1)
    assert t["bytes_transferred"] == 700 + 50 + 4000 + 9 and t["faults"] == 5
    assert (t["epns"], t["epns_synced"], t["jobs"]) == (3, 1, 2)
    routes = dict((r["name"], r) for r in summary["routes"])
    assert sorted(routes) == ["a", "b", "c"]
    assert (routes["a"]["items_total"], routes["a"]["tasks"], routes["a"]["bytes_transferred"]) == (3, 3, 759)
    assert (routes["b"]["items_failed"], routes["b"]["tasks_failed"]) == (2, 1)
    assert (routes["c"]["items_pending"], routes["c"]["tasks"]) == (1, 0)
    sites = dict((r["name"], r) for r in summary["sites"])
    assert sites["dst-b"]["tasks"] == 2 and sites["dst-c"]["items_total"] == 1
    assert all(isinstance(v, int) for r in summary["routes"] for k, v in r.items() if k != "name")


def test_hourly_progress(db):
    small_db(db)
    p = _report.collect(db, history_hours=6)["progress.json"]
    # Window: hours T0-3h .. T0+2h (the hour of T0 + 2.5 h is the last).
    assert p["hours"][0] == _report.iso(T0 - 3 * H) and p["hours"][-1] == _report.iso(T0 + 2 * H)
    assert p["bytes_per_route"] == {"a": [0, 300, 400, 50, 0, 0], "b": [0, 0, 0, 0, 4000, 0]}
    assert p["error_events"] == [0, 0, 1, 0, 2, 0]
    assert p["tasks_failed"] == [0, 0, 0, 0, 1, 0]
    # t3 runs through the whole window until T0 + 1.2 h; t1 hours -2..-1; t2 from 0; t4 hour 1.
    assert p["tasks_active"] == [1, 2, 2, 2, 3, 1]


def test_recent_tasks_failing_items_epns_and_jobs(db):
    small_db(db)
    data = _report.collect(db, recent=3, max_rows=1)
    tasks = data["tasks.json"]
    assert tasks["total"] == 5 and [k["task_id"] for k in tasks["tasks"]] == ["t4", "t2", "t1"]
    failed = _report.collect(db)["tasks.json"]["tasks"]
    assert [k["fatal_error"] for k in failed if k["task_id"] == "t3"] == ["PERMISSION_DENIED: " + HOSTILE]
    failing = data["items_failing.json"]
    assert failing["total"] == 2 and [i["last_error"] for i in failing["items"]] == ["E2"]
    epns = _report.collect(db)["epns.json"]
    assert [(s["state"], s["epns"]) for s in epns["by_state"]] == [("failed", 1), ("pending", 1), ("synced", 1)]
    assert [e["epn"] for e in epns["epns"]] == ["EPN2", "EPN3", "EPN1"]
    assert epns["epns"][0]["last_attempt_rc"] == 23 and epns["epns"][0]["last_attempt_stderr"].endswith(HOSTILE)
    assert len(epns["epns"][0]["last_attempt_stderr"]) == _report.STDERR_SHOWN + 1
    assert epns["last_attempt"]["epn"] == "EPN2" and epns["last_attempt"]["rc"] == 23
    assert epns["attempts_in_window"]["attempts"] == 2 and epns["attempts_in_window"]["failed"] == 2
    assert data["epns.json"]["total"] == 3 and len(data["epns.json"]["epns"]) == 1
    jobs = data["jobs.json"]["jobs"]
    assert [j["name"] for j in jobs] == ["j0", "j1"] and jobs[1]["last_result"] == {"ok": HOSTILE}
    assert jobs[0]["last_result"] == "plain text"


def test_bad_numbers_are_refused(db):
    with pytest.raises(ConfigError):
        _report.collect(db, history_hours=0)
    with pytest.raises(ConfigError):
        _report.collect(db, recent=-1)


# -- rendering ------------------------------------------------------------------------------
class Elements(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text, self.hrefs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.hrefs.extend(v for k, v in attrs if k == "href")

    def handle_data(self, data):
        self.text.append(data)


def test_page_escapes_untrusted_text_and_is_deterministic(tmp_path):
    db = open_state(str(tmp_path / "s.db"))
    try:
        small_db(db)
        db.execute("UPDATE globus_tasks SET job = ?, label = ? WHERE task_id = 't1'", (HOSTILE, HOSTILE + "&amp;"))
        data = _report.collect(db, title="T " + HOSTILE)
        files = _report.render_site(data, "https://app.globus.example/")
        again = _report.render_site(_report.collect(db, title="T " + HOSTILE), "https://app.globus.example/")
    finally:
        db.close()
    assert files == again
    page = files["index.html"].decode("utf-8")
    assert HOSTILE not in page and "&lt;script&gt;" in page
    parser = Elements()
    parser.feed(page)
    assert "script" not in parser.tags
    text = "".join(parser.text)
    assert HOSTILE + "&amp;" in text and "PERMISSION_DENIED: " + HOSTILE in text and "E1 " + HOSTILE in text
    assert "https://app.globus.example/activity/t2" in parser.hrefs
    assert json.loads(files["summary.json"])["title"] == "T " + HOSTILE


def test_charts_treat_names_as_plain_text():
    names = [HOSTILE, "$x^2$", "_hidden", "r&d"]
    hours = [_report.iso(T0 + n * H) for n in range(3)]
    progress = dict(hours=hours, bytes_per_route=dict((n, [1, 2, 3]) for n in names), tasks_active=[1, 2, 0],
                    tasks_failed=[0, 1, 0], error_events=[0, 0, 4])
    charts = _report.render_charts(progress)
    assert charts == _report.render_charts(progress)
    ids = []
    for svg in charts.values():
        root = ET.fromstring(svg)  # well-formed XML
        ids.extend(e.get("id") for e in root.iter() if e.get("id") and "clip" in e.tag)
        assert not [e for e in root.iter() if e.tag.endswith("script")]
    assert len(ids) == len(set(ids))  # two inline charts, no clash of clip-path ids
    texts = "".join(ET.fromstring(charts["bytes"]).itertext())
    for name in names:
        assert name in texts


def test_many_routes_fold_into_other():
    series = dict(("r%02d" % n, [n]) for n in range(12))
    shown = _report._chart_routes(series)
    assert len(shown) == _report.CHART_ROUTES + 1 and shown[0] == ("r11", [11])
    assert shown[-1] == ("4 other routes", [0 + 1 + 2 + 3])


def test_globus_app_url_must_be_http():
    assert _report.task_url_prefix("https://app.globus.org/") == "https://app.globus.org/activity/"
    for bad in ("javascript:alert(1)", "https://x\" onclick=\"y", "ftp://x"):
        with pytest.raises(ConfigError):
            _report.task_url_prefix(bad)


def test_missing_matplotlib_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingLibraryError) as info:
        _report.render_charts(dict(hours=[], bytes_per_route={}, tasks_active=[], tasks_failed=[], error_events=[]))
    assert info.value.pip_name == "matplotlib"


# -- publishing -----------------------------------------------------------------------------
def test_publish_swaps_generations_atomically(tmp_path):
    dest = str(tmp_path / "www" / "site")
    assert _report.read_site(dest) is None
    first = _report.publish_site(dest, {"index.html": b"one", "a.json": b"{}"})
    assert os.path.islink(dest) and os.readlink(dest) == os.path.basename(first)
    assert os.path.basename(first).startswith(".site.gen-") and os.stat(first).st_mode & 0o777 == 0o755
    assert os.stat(os.path.join(dest, "index.html")).st_mode & 0o777 == 0o644
    assert _report.read_site(dest) == {"index.html": b"one", "a.json": b"{}"}
    new = {"index.html": b"two"}
    assert _report.changed_files(_report.read_site(dest), new) == ["a.json", "index.html"]
    assert _report.changed_files(_report.read_site(dest), {"index.html": b"one", "a.json": b"{}"}) == []
    second = _report.publish_site(dest, new)
    assert not os.path.exists(first) and os.path.realpath(dest) == second
    assert sorted(os.listdir(str(tmp_path / "www"))) == sorted(["site", os.path.basename(second)])


def test_failed_write_keeps_the_old_site(tmp_path, monkeypatch):
    dest = str(tmp_path / "site")
    old = _report.publish_site(dest, {"index.html": b"old"})

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_report.os, "fsync", broken)
    with pytest.raises(OSError):
        _report.publish_site(dest, {"index.html": b"new"})
    monkeypatch.undo()
    assert os.path.realpath(dest) == old and _report.read_site(dest) == {"index.html": b"old"}
    assert sorted(os.listdir(str(tmp_path))) == sorted(["site", os.path.basename(old)])


def test_publish_refuses_foreign_content_and_spares_foreign_targets(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError):
        _report.publish_site(str(foreign), {"index.html": b"x"})
    assert (foreign / "mine.txt").read_text() == "keep"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        _report.read_site(str(tmp_path / "file"))
    empty = tmp_path / "empty"
    empty.mkdir()
    _report.publish_site(str(empty), {"index.html": b"x"})
    assert os.path.islink(str(empty))
    link = tmp_path / "linked"
    os.symlink(str(foreign), str(link))
    _report.publish_site(str(link), {"index.html": b"y"})
    assert (foreign / "mine.txt").read_text() == "keep" and _report.read_site(str(link)) == {"index.html": b"y"}
