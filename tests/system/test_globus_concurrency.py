# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""globus_transfer runs that overlap: two jobs (or two hosts on one PostgreSQL) over the same items."""

from __future__ import annotations

import collections
import json
import uuid

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._state import StateDB
from globus_setup import DST, DST2, SRC, client_env

CAP = 12


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()
    # Tasks of a file or two bytes take about half a second: they queue behind the three that run.
    emulator.configure(limits={"max_active_tasks": 3, "max_pending_tasks": CAP, "requests_per_second": 1000},
                       transfer_rate_bytes_per_second=4)
    yield
    emulator.configure(limits={"max_active_tasks": 3, "max_pending_tasks": 100, "requests_per_second": 20},
                       transfer_rate_bytes_per_second=None)


def source_tree(emulator, count):
    name = "c" + uuid.uuid4().hex[:8]
    paths = []
    for number in range(count):
        directory = emulator.root / "src" / name / ("d%02d" % number)
        directory.mkdir(parents=True)
        (directory / "f.nc").write_bytes(b"%d" % number)
        paths.append("%s/d%02d/" % (name, number))
    return paths


def finish(process, result_file):
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output
    with open(result_file) as handle:
        result = json.load(handle)
    assert not result.get("failed"), (result, output[-3000:])
    return result


def test_two_runs_at_once_send_every_item_once_within_the_budget(ansible, emulator, state_db_url, tmp_path):
    """Two jobs (different lock files: two hosts, or two overlapping route sets) run at once,
    round after round, over the same 64 items plus a route of their own; the identity budget is
    the emulator's pending-task limit, so one task too many would be refused with a 409."""
    shared = source_tree(emulator, 64)
    own = source_tree(emulator, 8)
    shared_route = {"name": "shared", "source_collection": SRC, "items": shared,
                    "destinations": [{"collection": DST, "prefix": "/shared"}]}

    def args(job, items):
        return {"state_db": state_db_url, "lock_file": str(tmp_path / (job + ".lock")),
                "identity_max_open_tasks": CAP, "max_active_tasks": 100, "max_submissions_per_run": 100,
                "routes": [shared_route, {"name": "own-" + job, "source_collection": SRC, "items": items,
                                          "destinations": [{"collection": DST2, "prefix": "/" + job}]}]}

    jobs = dict(a=args("a", own[:4]), b=args("b", own[4:]))
    waited = False
    for _round in range(12):
        started = [ansible.playbook("scidata.replication.globus_transfer", jobs[job], name=job,
                                    extra_env=client_env(emulator)) for job in sorted(jobs)]
        results = [finish(*run) for run in started]
        waited = waited or any(route["waiting_for_budget"] for r in results for route in r["routes"].values())
        assert all(r["task_budget"]["open_tasks"] <= CAP for r in results)
        emulator.wait_idle(timeout=120)
        if not any(r["tasks"] for r in results) and all(
                route["counts"]["PENDING"] == route["counts"]["ACTIVE"] == 0
                for r in results for route in r["routes"].values()):
            break
    else:
        raise AssertionError("items left after 12 rounds: %s" % [r["routes"] for r in results])

    assert waited  # 72 items in tasks of one against a budget of 12: some runs had to wait
    refused = [r for r in emulator.admin("GET", "/_emulator/requests")["requests"] if r["status"] >= 400]
    assert refused == []  # never a 409 "too many pending tasks", nor anything else
    tasks = emulator.tasks()
    assert {t["status"] for t in tasks} == {"SUCCEEDED"}
    sent = collections.Counter((t["destination_endpoint_id"], item["source_path"]) for t in tasks for item in t["items"])
    expected = [(DST, "/" + p) for p in shared] + [(DST2, "/" + p) for p in own]
    assert sorted(sent) == sorted(expected) and set(sent.values()) == {1}  # every item exactly once
    for path in shared:
        copied = emulator.root / "dst" / "shared" / path / "f.nc"
        assert copied.read_bytes() == (emulator.root / "src" / path / "f.nc").read_bytes()
    db = StateDB(state_db_url)
    try:
        assert db.scalar("SELECT count(*) FROM globus_tasks") == len(tasks) == 72
        statuses = db.query("SELECT status, count(*) AS n FROM transfer_items GROUP BY status")
        assert [(r["status"], r["n"]) for r in statuses] == [("SUCCEEDED", 72)]
    finally:
        db.close()
