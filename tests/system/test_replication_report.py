# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""replication_report through real ansible-playbook runs, and its page in real headless Chromium.

The state database is filled with realistic rows (several routes, a dir_trie_sync job, tasks in
every status, PROGRESS events over 48 hours, failing items, EPNs, rsync attempts, sync jobs)
carrying hostile text. The module runs check → apply → rerun (unchanged) → DB change → rerun.
Then the page is opened in real headless Chromium (tests/harness/dashboard_browser.py).
"""

from __future__ import annotations

import json
import os
import random

from ansible_collections.scidata.replication.plugins.module_utils._report import SITE_FILES
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state
from dashboard_browser import db_totals, load_dashboard

MODULE = "scidata.replication.replication_report"
HOSTILE = "<script>alert(1)</script>"
BASE = 1777593600.0  # 2026-05-01T00:00:00Z: the data spans the 48 hours before BASE
HOUR = 3600.0
SITES = {"alcf": "8896f38e-68d1-4708-bce4-b1b3a27405b8", "olcf": "ef1a9560-7ca1-11e5-992c-22000b96db58",
         "llnl": "1889ea03-25ad-4f9f-8110-1ce8833a9d7e", "aps": "6f8a2c1e-53b0-4f2e-9a57-0d1c1f3b8e21"}
ROUTES = [("llnl-alcf", "llnl", "alcf"), ("llnl-olcf", "llnl", "olcf"), ("alcf-olcf", "alcf", "olcf")]
OUTPUT = os.environ.get("SCIDATA_TEST_OUTPUT") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "output", "replication_report")


# -- a realistic state database -------------------------------------------------------------
def task_row(n, route, status, begin, end, rng, label=None, job=None):
    source, destination = route[1], route[2]
    files = rng.randint(20, 400)
    done = files if status == "SUCCEEDED" else rng.randint(0, files)
    size = done * rng.randint(50, 900) * 10 ** 6
    return dict(
        submission_id="sub-%04d" % n, task_id="%08x-6d04-11e5-ba46-%012d" % (rng.getrandbits(32), n), job=job or route[0],
        kind="transfer", label=label or "%s CMIP6 batch %d" % (route[0], n), source_endpoint=SITES[source],
        destination_endpoint=SITES[destination], request="{}", status=status,
        nice_status={"ACTIVE": "Queued", "INACTIVE": "PAUSED_BY_ADMIN", "FAILED": "FILE_NOT_FOUND"}.get(status, "OK"),
        is_paused=1 if status == "INACTIVE" else 0, files=files, files_transferred=done, files_skipped=0,
        directories=rng.randint(1, 9), bytes_transferred=size, bytes_checksummed=size,
        effective_bytes_per_second=int(size / max(end - begin, 60)) if end else rng.randint(10 ** 7, 10 ** 9),
        faults=rng.choice([0, 0, 0, 1, 3, 12]), request_time=begin, completion_time=end,
        fatal_error=json.dumps({"code": "FILE_NOT_FOUND", "description": "No such file " + HOSTILE})
        if status == "FAILED" else None,
        created_at=begin - 5, submitted_at=begin, updated_at=end or BASE - 60)


def fill(db, seed=8):
    """About 60 tasks, 3000 events, 400 items, 14 EPNs and 2 sync jobs over the 48 h before BASE."""
    rng = random.Random(seed)
    tasks, events, items = [], [], []
    statuses = ["SUCCEEDED"] * 14 + ["FAILED"] * 3 + ["ACTIVE"] * 2 + ["INACTIVE"]
    n = 0
    for route in ROUTES + [("aps-detector-sync", "aps", "alcf")]:
        for status in statuses:
            n += 1
            begin = BASE - rng.uniform(2, 47) * HOUR
            end = min(begin + rng.uniform(0.3, 6) * HOUR, BASE - 120) if status in ("SUCCEEDED", "FAILED") else None
            label = HOSTILE + " in a label" if n == 3 else None
            task = task_row(n, route, status, begin, end, rng, label=label)
            tasks.append(task)
            # PROGRESS every 10 minutes (bytes of the interval), a few error events.
            stop = end or BASE - 60
            steps = max(1, int((stop - begin) // 600))
            for step in range(steps):
                events.append(dict(task_id=task["task_id"], time=begin + 600 * (step + 1), code="PROGRESS",
                                   is_error=0, description="progress", details="{}",
                                   bytes=task["bytes_transferred"] // steps, mbps=80.0, duration=600.0,
                                   fingerprint="p%d-%d" % (n, step)))
            for fault in range(min(task["faults"], 4)):
                events.append(dict(task_id=task["task_id"], time=begin + 300 + 900 * fault, code="CONNECTION_RESET",
                                   is_error=1, description="connection reset by peer " + HOSTILE,
                                   details="Error (transfer)\nEndpoint: x\n" + HOSTILE, bytes=None, mbps=None,
                                   duration=None, fingerprint="e%d-%d" % (n, fault)))
    # One finished task without any PROGRESS event: counted in its completion hour.
    n += 1
    lone = task_row(n, ROUTES[0], "SUCCEEDED", BASE - 30 * HOUR, BASE - 29.5 * HOUR, rng)
    tasks.append(lone)
    item_status = ["SUCCEEDED"] * 6 + ["ACTIVE", "PENDING", "PENDING", "FAILED"]
    for route in ROUTES + [("olcf-alcf", "olcf", "alcf")]:
        for i in range(100):
            status = item_status[i % len(item_status)] if route[0] != "olcf-alcf" else "PENDING"
            error = None
            if status == "FAILED":
                error = "FILE_NOT_FOUND: /css03_data/CMIP6/%d %s & \"quotes\"" % (i, HOSTILE)
            items.append(dict(
                route=route[0], source_collection=SITES[route[1]],
                source_path="/css03_data/CMIP6/CMIP/NCAR/CESM2/historical/r%di1p1f1/" % i,
                destination_collection=SITES[route[2]], destination_path="/esg/replica/CMIP6/r%di1p1f1/" % i,
                status=status, attempts=3 if status == "FAILED" else (1 if status != "PENDING" else 0),
                last_error=error, created_at=BASE - 47 * HOUR, updated_at=BASE - rng.uniform(1, 40) * HOUR,
                completed_at=BASE - 2 * HOUR if status == "SUCCEEDED" else None))
    epns, attempts = [], []
    for i, state in enumerate(["synced"] * 8 + ["pending"] * 3 + ["retry", "failed", "failed"]):
        epn = "EPN%06d" % (101000 + i)
        synced = BASE - rng.uniform(1, 40) * HOUR if state == "synced" else None
        epns.append(dict(epn=epn, beamline="BL%d" % (i % 3 + 1), project="project %d" % i if i else HOSTILE,
                         state=state, attempts=0 if state in ("synced", "pending") else 2,
                         last_rc=0 if state == "synced" else (23 if state in ("retry", "failed") else None),
                         bytes_transferred=rng.randint(10 ** 9, 10 ** 11) if synced else None,
                         last_synced_at=synced, created_at=BASE - 47 * HOUR,
                         updated_at=synced or BASE - rng.uniform(1, 40) * HOUR))
        if state != "pending":
            started = BASE - rng.uniform(2, 44) * HOUR
            failed = state != "synced"
            attempts.append(dict(id=len(attempts) + 1, epn=epn, host="dtn01", started_at=started, ended_at=started + 600,
                                 rc=23 if failed else 0, bytes=rng.randint(10 ** 8, 10 ** 10), files=rng.randint(1, 999),
                                 stderr_tail="rsync: send_files failed to open " + HOSTILE if failed else ""))
    jobs = [dict(name="aps-detector-sync", kind="dir_trie_sync", source="/gdata/aps/detector", last_run_at=BASE - 600,
                 last_scan_at=BASE - 620, files_indexed=182734, files_pending=412,
                 last_result=json.dumps({"changed": True, "submitted": 1, "note": HOSTILE}), updated_at=BASE - 600),
            dict(name="olcf-archive", kind="dir_trie_sync", source="/lustre/archive", last_run_at=BASE - 7200,
                 last_scan_at=BASE - 7300, files_indexed=5012, files_pending=0, last_result="not json " + HOSTILE,
                 updated_at=BASE - 7200)]
    db.upsert("globus_tasks", tasks, key=["submission_id"])
    db.upsert("task_events", events, key=["task_id", "fingerprint"])
    db.upsert("transfer_items", items, key=["route", "source_path", "destination_collection", "destination_path"])
    db.upsert("epns", epns, key=["epn"])
    db.upsert("rsync_attempts", attempts, key=["id"])
    db.upsert("sync_jobs", jobs, key=["name"])


def site_state(dest):
    return dict((name, open(os.path.join(dest, name), "rb").read()) for name in sorted(os.listdir(dest)))


# -- the module through ansible-playbook ----------------------------------------------------
def test_check_apply_idempotent_and_change(ansible, state_db_url, tmp_path):
    db = open_state(state_db_url)
    try:
        fill(db)
        expected = db_totals(db)
    finally:
        db.close()
    www = tmp_path / "www"
    dest = str(www / "replication")
    args = {"state_db": state_db_url, "dest": dest, "title": "Replication " + HOSTILE,
            "lock_file": str(tmp_path / "report.lock")}

    result, _out = ansible.run(MODULE, args, check=True)
    assert result["changed"] is True and not result.get("failed"), result
    assert not os.path.lexists(dest) and not www.exists()
    assert result["totals"]["items_total"] == expected["items_total"]

    result, _out = ansible.run(MODULE, args)
    assert result["changed"] is True and not result.get("failed"), result
    assert os.path.islink(dest) and sorted(os.listdir(dest)) == sorted(SITE_FILES)
    assert sorted(result["changed_files"]) == sorted(SITE_FILES)
    generation = os.path.realpath(dest)
    assert result["generation"] == generation and os.path.dirname(generation) == str(www)
    assert oct(os.stat(generation).st_mode & 0o777) == "0o755"
    summary = json.load(open(os.path.join(dest, "summary.json")))
    for key in ("items_total", "items_done", "items_active", "items_failed", "items_pending", "tasks", "tasks_active",
                "tasks_failed",
                "files_transferred", "bytes_transferred", "epns_synced"):
        assert summary["totals"][key] == expected[key], key
    assert [r["name"] for r in summary["routes"]] == ["alcf-olcf", "aps-detector-sync", "llnl-alcf", "llnl-olcf",
                                                      "olcf-alcf"]
    progress = json.load(open(os.path.join(dest, "progress.json")))
    assert len(progress["hours"]) == 48 and sum(progress["tasks_failed"]) == expected["tasks_failed"]
    assert json.load(open(os.path.join(dest, "items_failing.json")))["total"] == expected["failing"]
    assert json.load(open(os.path.join(dest, "jobs.json")))["jobs"][0]["files_pending"] == 412
    before = site_state(dest)

    # Unchanged database: byte-identical files, no new generation, changed=false.
    result, _out = ansible.run(MODULE, args)
    assert result["changed"] is False and result["changed_files"] == [], result
    assert os.path.realpath(dest) == generation and site_state(dest) == before
    result, _out = ansible.run(MODULE, args, check=True)
    assert result["changed"] is False

    # The database changes: check mode says so and writes nothing, the real run swaps generations.
    db = open_state(state_db_url)
    try:
        db.execute("UPDATE transfer_items SET status = 'SUCCEEDED', updated_at = ? WHERE id = "
                   "(SELECT MIN(id) FROM transfer_items WHERE status = 'PENDING')", (BASE - 30,))
    finally:
        db.close()
    result, _out = ansible.run(MODULE, args, check=True, extra_env={"ANSIBLE_DIFF_ALWAYS": "1"})
    assert result["changed"] is True and "summary.json" in result["changed_files"]
    diff = result["diff"]
    assert json.loads(diff["after"])["totals"]["items_done"] == json.loads(diff["before"])["totals"]["items_done"] + 1
    assert os.path.realpath(dest) == generation and site_state(dest) == before
    result, _out = ansible.run(MODULE, args)
    assert result["changed"] is True and "summary.json" in result["changed_files"]
    assert os.path.realpath(dest) != generation and not os.path.exists(generation)
    assert json.load(open(os.path.join(dest, "summary.json")))["totals"]["items_done"] == expected["items_done"] + 1
    assert sorted(os.listdir(str(www))) == sorted(["replication", os.path.basename(os.path.realpath(dest))])


def test_refuses_a_foreign_directory_and_bad_url(ansible, tmp_path):
    dest = tmp_path / "site"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    result, _out = ansible.run(MODULE, {"state_db": str(tmp_path / "s.db"), "dest": str(dest)})
    assert result.get("failed") and "did not write" in result["msg"]
    assert (dest / "keep.txt").read_text() == "mine"
    result, _out = ansible.run(MODULE, {"state_db": str(tmp_path / "s.db"), "dest": str(tmp_path / "x"),
                                        "globus_app_url": "javascript:alert(1)"})
    assert result.get("failed") and "globus_app_url" in result["msg"]


# -- the page in real headless Chromium -----------------------------------------------------
def test_dashboard_in_headless_chromium(ansible, tmp_path):
    url = str(tmp_path / "state.db")
    db = open_state(url)
    try:
        fill(db)
        expected = db_totals(db)
    finally:
        db.close()
    dest = str(tmp_path / "www" / "replication")
    result, _out = ansible.run(MODULE, {"state_db": url, "dest": dest, "title": "Replication status",
                                        "lock_file": str(tmp_path / "report.lock")})
    assert result["changed"] and not result.get("failed"), result
    page = open(os.path.join(dest, "index.html"), encoding="utf-8").read()
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page

    reader = load_dashboard(dest, str(tmp_path), os.path.join(OUTPUT, "dashboard.png"), expected)
    assert "llnl-alcf" in "".join(reader.chart_text["chart-bytes"])
    # Hostile text is shown as text and never became markup.
    assert HOSTILE in "".join(reader.text)
