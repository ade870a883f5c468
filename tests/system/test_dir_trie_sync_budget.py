# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""dir_trie_sync and globus_transfer on one state database draw on one task budget of the Globus identity."""

from __future__ import annotations

import os
import uuid

import pytest

from globus_setup import DST, DST2, SRC, client_env

BUDGET = 2


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()
    yield
    emulator.reset()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def run(ansible, emulator, module, args, check=False):
    result, output = ansible.run(module, args, check=check, extra_env=client_env(emulator))
    assert not result.get("failed"), (result, output[-3000:])
    return result


def test_dir_trie_sync_waits_while_globus_transfer_tasks_use_the_budget(ansible, emulator, state_db_url, tmp_path):
    name = "b" + uuid.uuid4().hex[:8]
    src = emulator.root / "src" / name
    for number in range(BUDGET):
        write(str(src / "items" / ("d%d" % number) / "f.nc"), b"item %d" % number)
    write(str(src / "tree" / "a.dat"), b"a")
    write(str(src / "tree" / "b.dat"), b"b")
    # The route's tasks stop INACTIVE at the destination: they stay open until resumed.
    emulator.add_fault(kind="inactive", path_prefix="/%s-route/" % name, count=BUDGET)
    route_args = {"state_db": state_db_url, "lock_file": str(tmp_path / "route.lock"),
                  "identity_max_open_tasks": BUDGET, "items_per_task": 1,
                  "routes": [{"name": "route-" + name, "source_collection": SRC,
                              "items": ["%s/items/d%d/" % (name, n) for n in range(BUDGET)],
                              "destinations": [{"collection": DST2, "prefix": "/%s-route" % name}]}]}
    route_run = run(ansible, emulator, "scidata.replication.globus_transfer", route_args)
    assert len(route_run["tasks"]) == BUDGET and route_run["task_budget"] == {"open_tasks": BUDGET, "limit": BUDGET}

    dst = emulator.root / "dst" / (name + "-tree")
    sync_args = {"job": name, "src_dir": str(src / "tree"), "source_collection": SRC, "source_path": "/%s/tree" % name,
                 "destinations": [{"collection": DST, "path": "/%s-tree" % name}], "state_db": state_db_url,
                 "index_dir": str(tmp_path), "lock_file": str(tmp_path / "sync.lock"),
                 "identity_max_open_tasks": BUDGET}
    reason = "waiting for task budget: 2 of 2 open tasks for this Globus identity (identity_max_open_tasks)"
    planned = run(ansible, emulator, "scidata.replication.dir_trie_sync", sync_args, check=True)
    assert planned["tasks"] == [] and planned["waiting_for_budget"] is True and planned["reason"] == reason
    waiting = run(ansible, emulator, "scidata.replication.dir_trie_sync", sync_args)
    assert waiting["tasks"] == [] and waiting["waiting_for_budget"] is True and waiting["reason"] == reason
    assert waiting["pending"] == 2 and waiting["in_flight"] == 0 and waiting["open_tasks"] == 0
    assert waiting["task_budget"] == {"open_tasks": BUDGET, "limit": BUDGET}
    assert len(emulator.tasks()) == BUDGET  # nothing was submitted beyond the route's tasks
    assert not dst.exists()

    for task in route_run["tasks"]:
        emulator.admin("POST", "/_emulator/tasks/%s/resume" % task["task_id"])
    emulator.wait_idle()
    settled = run(ansible, emulator, "scidata.replication.globus_transfer", route_args)
    assert settled["task_budget"]["open_tasks"] == 0
    sent = run(ansible, emulator, "scidata.replication.dir_trie_sync", sync_args)
    assert sent["waiting_for_budget"] is False and sent["reason"] is None
    assert [sorted(t["paths"]) for t in sent["tasks"]] == [["a.dat", "b.dat"]]
    emulator.wait_idle()
    done = run(ansible, emulator, "scidata.replication.dir_trie_sync", sync_args)
    assert done["changed"] is False and done["pending"] == 0 and done["reason"] == "nothing to send"
    assert (dst / "a.dat").read_bytes() == b"a" and (dst / "b.dat").read_bytes() == b"b"
