# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""globus_transfer and globus_task_events through ansible-playbook, against the API emulator."""

from __future__ import annotations

import filecmp
import json
import os
import time
import uuid

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._state import StateDB
from dashboard_browser import db_totals, load_dashboard
from globus_setup import DST, DST2, SRC, client_env

OUTPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "output", "end_to_end")
HOSTILE_NAMES = ["with space.nc", "ünïcødé.nc", "-leading-dash.nc", "quote'\"s.nc", "$(touch pwned).nc"]


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()


@pytest.fixture
def tree(emulator):
    """A fresh source tree of datasets with nested directories and hostile file names."""
    name = "t" + uuid.uuid4().hex[:8]
    datasets = []
    for number in range(5):
        experiment = "exp%d" % number if number < 4 else "-exp 4 ünï 'q\""  # a hostile item path too
        dataset = os.path.join(str(emulator.root / "src"), name, "CMIP6", experiment, "v1")
        os.makedirs(os.path.join(dataset, "nested", "deeper"))
        for index, file_name in enumerate(HOSTILE_NAMES[: 2 + number % 4]):
            with open(os.path.join(dataset, file_name), "wb") as handle:
                handle.write(os.urandom(2048 + index))
        with open(os.path.join(dataset, "nested", "deeper", "data.nc"), "wb") as handle:
            handle.write(os.urandom(4096))
        datasets.append("%s/CMIP6/%s/v1/" % (name, experiment))
    return name, datasets


def same_tree(left, right):
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.diff_files or comparison.funny_files:
        return False
    _match, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(os.path.join(left, d), os.path.join(right, d))
                                               for d in comparison.common_dirs)


def db_rows(url, sql, params=()):
    db = StateDB(url)
    try:
        return db.query(sql, params)
    finally:
        db.close()


def run(ansible, emulator, module, args, **kwargs):
    result, output = ansible.run("scidata.replication." + module, args, extra_env=client_env(emulator), **kwargs)
    assert not result.get("failed"), (result, output[-3000:])
    return result


def converge(ansible, emulator, args, state_db, rounds=8):
    """Run transfer -> let tasks finish -> collect events, until no item is left to send."""
    for _round in range(rounds):
        result = run(ansible, emulator, "globus_transfer", args)
        emulator.wait_idle(timeout=60)
        run(ansible, emulator, "globus_task_events", {"state_db": state_db, "task_files": True})
        counts = [r["counts"] for r in run(ansible, emulator, "globus_transfer", dict(args))["routes"].values()]
        emulator.wait_idle(timeout=60)
        if all(c["PENDING"] == 0 and c["ACTIVE"] == 0 and c["FAILED"] == 0 for c in counts):
            run(ansible, emulator, "globus_task_events", {"state_db": state_db})
            return result
    raise AssertionError("items left after %d rounds: %s" % (rounds, counts))


def test_esgf_scenario_end_to_end(ansible, emulator, tree, state_db_url):
    name, datasets = tree
    items_file = os.path.join(str(emulator.root), name + ".lst")
    with open(items_file, "w") as handle:
        handle.write("# CMIP6 datasets\n\n" + "\n".join(datasets) + "\n")
    args = {
        "state_db": state_db_url,
        "items_per_task": 2,
        "max_submissions_per_run": 6,
        "filter_rules": [{"method": "exclude", "type": "file", "name": ".*"}],
        "routes": [
            {"name": "to-a", "source_collection": SRC, "items_from": items_file,
             "destinations": [{"collection": DST, "prefix": "/site-a"}]},
            {"name": "to-b", "source_collection": SRC, "items_from": items_file, "order": "desc",
             "destinations": [{"collection": DST2, "prefix": "/site-b"}]},
            {"name": "a-to-b", "source_collection": DST, "source_route": "to-a", "source_prefix": "/site-a",
             "destinations": [{"collection": DST2, "prefix": "/exchange"}]},
        ],
    }
    # Check mode: a plan, and nothing anywhere.
    planned = run(ansible, emulator, "globus_transfer", args, check=True)
    assert planned["changed"] and planned["routes"]["to-a"]["registered"] == 5
    assert {t["route"] for t in planned["tasks"]} == {"to-a", "to-b"}
    assert all(t["items"] <= 2 for t in planned["tasks"]) and len(planned["tasks"]) == 6
    assert planned["tasks"][0]["paths"][0]["source"].startswith("/%s/CMIP6/" % name)
    assert emulator.tasks() == []
    if state_db_url.startswith("/"):
        assert not os.path.exists(state_db_url)
    else:
        untouched = StateDB(state_db_url)
        assert untouched.schema_version() == 0  # not even the schema was left behind
        untouched.close()

    converge(ansible, emulator, args, state_db_url)

    source = str(emulator.root / "src" / name)
    assert same_tree(source, str(emulator.root / "dst" / "site-a" / name))
    assert same_tree(source, str(emulator.root / "dst2" / "site-b" / name))
    assert same_tree(source, str(emulator.root / "dst2" / "exchange" / name))
    statuses = db_rows(state_db_url, "SELECT route, status, count(*) AS n FROM transfer_items GROUP BY route, status")
    assert sorted((r["route"], r["status"], r["n"]) for r in statuses) == [
        ("a-to-b", "SUCCEEDED", 5), ("to-a", "SUCCEEDED", 5), ("to-b", "SUCCEEDED", 5)]
    progress = db_rows(state_db_url, "SELECT bytes, mbps, duration FROM task_events WHERE code = 'PROGRESS'")
    assert progress and all(r["bytes"] > 0 and r["duration"] > 0 for r in progress)
    events_before = db_rows(state_db_url, "SELECT count(*) AS n FROM task_events")[0]["n"]
    source_files = sum(len(files) for _root, _dirs, files in os.walk(source))
    transferred = db_rows(state_db_url, "SELECT t.job, count(*) AS n FROM task_files f JOIN globus_tasks t "
                                        "ON t.task_id = f.task_id WHERE f.kind = 'succeeded' GROUP BY t.job")
    assert sorted((r["job"], r["n"]) for r in transferred) == [
        ("a-to-b", source_files), ("to-a", source_files), ("to-b", source_files)]
    tasks = emulator.tasks()
    assert len({t["submission_id"] for t in tasks}) == len(tasks) == 9  # 3 + 3 + 3 tasks of two items or one

    # The dashboard of this end-to-end database, in real headless Chromium.
    dest = os.path.join(str(emulator.root), name + "-dashboard")
    report = run(ansible, emulator, "replication_report", {"state_db": state_db_url, "dest": dest})
    assert report["changed"]
    db = StateDB(state_db_url)
    try:
        expected = db_totals(db)
    finally:
        db.close()
    assert expected["items_done"] == 15 and expected["tasks"] == 9
    reader = load_dashboard(dest, str(emulator.root), os.path.join(OUTPUT, "end-to-end-%s.png" % name), expected)
    assert "a-to-b" in "".join(reader.chart_text["chart-bytes"])

    again = run(ansible, emulator, "globus_transfer", args)
    assert again["changed"] is False and again["tasks"] == []
    events = run(ansible, emulator, "globus_task_events", {"state_db": state_db_url})
    assert events["changed"] is False and events["events_added"] == 0
    assert db_rows(state_db_url, "SELECT count(*) AS n FROM task_events")[0]["n"] == events_before
    assert len(emulator.tasks()) == 9


def test_failure_backoff_checksum_retry_and_cap(ansible, emulator, tree, tmp_path):
    name, datasets = tree
    state_db = str(tmp_path / "state.db")
    flaky, broken = datasets[0], datasets[1]
    emulator.add_fault(kind="fail", path_prefix="/" + flaky, count=1, code="ENDPOINT_ERROR",
                       description="injected failure")
    emulator.add_fault(kind="fail", path_prefix="/" + broken, code="PERMISSION_DENIED", description="always")
    args = {"state_db": state_db, "retry_backoff": 1, "max_attempts": 2,
            "routes": [{"name": "r", "source_collection": SRC, "items": [flaky, broken],
                        "destinations": [{"collection": DST, "prefix": "/retry"}]}]}
    first = run(ansible, emulator, "globus_transfer", args)
    assert [t["sync_level"] for t in first["tasks"]] == ["mtime", "mtime"]
    emulator.wait_idle()
    run(ansible, emulator, "globus_task_events", {"state_db": state_db})
    failed = db_rows(state_db, "SELECT source_path, status, attempts, last_error FROM transfer_items ORDER BY source_path")
    assert [r["status"] for r in failed] == ["FAILED", "FAILED"]
    assert "injected failure" in failed[0]["last_error"]

    retried = run(ansible, emulator, "globus_transfer", dict(args, retry_backoff=3600))
    assert retried["tasks"] == []  # still inside the backoff
    time.sleep(1.5)
    retried = run(ansible, emulator, "globus_transfer", args)
    assert sorted(t["sync_level"] for t in retried["tasks"]) == ["checksum", "checksum"]
    emulator.wait_idle()
    run(ansible, emulator, "globus_task_events", {"state_db": state_db})
    time.sleep(1.5)
    final = run(ansible, emulator, "globus_transfer", args)
    assert final["tasks"] == [] and final["changed"] is False
    route = final["routes"]["r"]
    assert route["counts"]["SUCCEEDED"] == 1 and route["counts"]["FAILED"] == 1
    assert [i["source"] for i in route["failed_items"]] == ["/" + broken] and route["failed_items"][0]["attempts"] == 2
    assert same_tree(str(emulator.root / "src" / flaky), str(emulator.root / "dst" / "retry" / flaky))
    requests = [json.loads(r["request"]) for r in db_rows(state_db, "SELECT request FROM globus_tasks ORDER BY id")]
    assert [r["sync_level"] for r in requests] == ["mtime", "mtime", "checksum", "checksum"]
    assert len(emulator.tasks()) == 4


def test_pause_blocks_the_route_and_uses_the_overflow(ansible, emulator, tree, tmp_path):
    name, datasets = tree
    state_db = str(tmp_path / "state.db")
    emulator.add_fault(kind="pause", path_prefix="/" + datasets[0], count=1)
    args = {"state_db": state_db, "max_submissions_per_run": 1,
            "routes": [{"name": "primary", "source_collection": SRC, "items": datasets[:3],
                        "destinations": [{"collection": DST, "prefix": "/primary"}]},
                       {"name": "overflow", "source_collection": SRC, "items": datasets[:3], "overflow_for": "primary",
                        "destinations": [{"collection": DST2, "prefix": "/overflow"}]}]}
    first = run(ansible, emulator, "globus_transfer", args)
    assert [t["route"] for t in first["tasks"]] == ["primary"]
    paused_task = first["tasks"][0]["task_id"]
    deadline = time.monotonic() + 60  # the emulator starts the task when it gets to it, later on a busy machine
    while not emulator.task(paused_task)["is_paused"] and time.monotonic() < deadline:
        time.sleep(0.1)
    run(ansible, emulator, "globus_task_events", {"state_db": state_db})
    assert db_rows(state_db, "SELECT is_paused FROM globus_tasks WHERE task_id = ?", (paused_task,))[0]["is_paused"]
    second = run(ansible, emulator, "globus_transfer", args)
    assert second["routes"]["primary"]["paused"] is True
    assert "paused" in second["routes"]["primary"]["reason"]
    assert [t["route"] for t in second["tasks"]] == ["overflow"]
    emulator.admin("POST", "/_emulator/tasks/%s/resume" % paused_task)
    emulator.wait_idle()
    run(ansible, emulator, "globus_task_events", {"state_db": state_db})
    third = run(ansible, emulator, "globus_transfer", args)
    assert [t["route"] for t in third["tasks"]] == ["primary"]
    assert third["routes"]["primary"]["paused"] is False
    emulator.wait_idle()


@pytest.mark.parametrize("label", ["x" * 129, "{route}\nsecond line", "{unknown}"])
def test_bad_label_fails_before_any_request(ansible, emulator, tmp_path, label):
    result, _output = ansible.run("scidata.replication.globus_transfer", {
        "state_db": str(tmp_path / "state.db"), "label": label,
        "routes": [{"name": "r", "source_collection": SRC, "items": ["a/"], "destinations": [{"collection": DST}]}],
    }, extra_env=client_env(emulator))
    assert result["failed"] and "label" in result["msg"]
    assert emulator.admin("GET", "/_emulator/requests")["requests"] == []
    assert not os.path.exists(str(tmp_path / "state.db"))


def test_delete_after_success_only_unmodified_and_fully_replicated(ansible, emulator, tree, tmp_path):
    name, datasets = tree
    state_db = str(tmp_path / "state.db")
    kept_for_other_route, modified, deletable = datasets[2], datasets[1], datasets[0]
    # Written a minute ago: a change in the same whole second as the transfer request would
    # rightly count as made after it (Globus reports both in whole seconds).
    minute_ago = time.time() - 60
    for directory, dirs, files in os.walk(str(emulator.root / "src" / name)):
        for entry in dirs + files:
            os.utime(os.path.join(directory, entry), (minute_ago, minute_ago))
    args = {"state_db": state_db, "delete_after_success": True,
            "routes": [{"name": "move", "source_collection": SRC, "items": [deletable, modified, kept_for_other_route],
                        "destinations": [{"collection": DST, "prefix": "/moved"}]},
                       # Never submits (its primary is not paused), so its item stays PENDING.
                       {"name": "other", "source_collection": SRC, "items": [kept_for_other_route],
                        "overflow_for": "move", "destinations": [{"collection": DST2, "prefix": "/other"}]}]}
    run(ansible, emulator, "globus_transfer", args)
    emulator.wait_idle()
    run(ansible, emulator, "globus_task_events", {"state_db": state_db})
    time.sleep(1.1)  # last_modified has whole seconds
    with open(os.path.join(str(emulator.root / "src"), modified, "nested", "deeper", "data.nc"), "ab") as handle:
        handle.write(b"appended after the transfer")

    planned = run(ansible, emulator, "globus_transfer", args, check=True)
    deletions = planned["routes"]["move"]["deletions"]
    assert deletions["scheduled"] == ["/" + deletable], planned["routes"]
    assert sorted(b["source"] for b in deletions["blocked"]) == sorted(["/" + modified, "/" + kept_for_other_route])
    assert os.path.isdir(os.path.join(str(emulator.root / "src"), deletable))

    applied = run(ansible, emulator, "globus_transfer", args)
    assert [t["kind"] for t in applied["tasks"] if t.get("kind")] == ["delete"]
    emulator.wait_idle()
    run(ansible, emulator, "globus_task_events", {"state_db": state_db})
    assert not os.path.exists(os.path.join(str(emulator.root / "src"), deletable))
    assert os.path.isdir(os.path.join(str(emulator.root / "src"), modified))
    assert os.path.isdir(os.path.join(str(emulator.root / "src"), kept_for_other_route))
    assert os.path.isfile(str(emulator.root / "dst" / "moved" / deletable / "nested" / "deeper" / "data.nc"))
    rows = db_rows(state_db, "SELECT source_path FROM transfer_items WHERE source_deleted_at IS NOT NULL")
    assert [r["source_path"] for r in rows] == ["/" + deletable]

    again = run(ansible, emulator, "globus_transfer", args)
    assert again["changed"] is False and again["routes"]["move"]["deletions"]["deleted"] == 1
    assert again["routes"]["move"]["deletions"]["scheduled"] == []
