# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A check run that talks to Globus for a long time never holds up a real run on the same state DB."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._state import StateDB
from globus_setup import DST, SRC, client_env


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()


def run(ansible, emulator, module, args, **kwargs):
    result, output = ansible.run("scidata.replication." + module, args, extra_env=client_env(emulator), **kwargs)
    assert not result.get("failed"), (result, output[-3000:])
    return result


def test_a_real_run_goes_ahead_while_a_check_run_pages_events(ansible, emulator, state_db_url):
    name = "l" + uuid.uuid4().hex[:8]
    for number in range(2):
        directory = emulator.root / "src" / name / ("d%d" % number)
        directory.mkdir(parents=True)
        (directory / "f.nc").write_bytes(b"x" * 64)
    paths = ["%s/d%d/" % (name, number) for number in range(2)]

    def route(items):
        return {"state_db": state_db_url, "routes": [{"name": "b", "source_collection": SRC, "items": items,
                                                      "destinations": [{"collection": DST, "prefix": "/locks"}]}]}

    first = run(ansible, emulator, "globus_transfer", route(paths[:1]))
    emulator.wait_idle()  # finished at Globus; the state DB still says ACTIVE

    # Job A's check run: refreshes that task, then waits about 40 s on its event list (429, Retry-After 10).
    emulator.add_fault(kind="http_error", status=429, retry_after=10, count=4, http_path="/event_list")
    checking, result_file = ansible.playbook("scidata.replication.globus_task_events",
                                             {"state_db": state_db_url, "max_retries": 5}, check=True, name="check",
                                             extra_env=client_env(emulator))
    deadline = time.monotonic() + 60
    while not any(rule["fired"] for rule in emulator.admin("GET", "/_emulator/faults")["rules"]):
        assert checking.poll() is None, "the check run ended before its paging: %s" % checking.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the check run never reached its paging"
        time.sleep(0.2)

    real = run(ansible, emulator, "globus_transfer", route(paths))
    assert checking.poll() is None  # the real run is done while the check run still pages
    assert [t["route"] for t in real["tasks"]] == ["b"] and real["tasks"][0]["items"] == 1
    assert real["routes"]["b"]["counts"]["SUCCEEDED"] == 1  # it refreshed the task the check run had read

    checking.communicate(timeout=120)
    assert checking.returncode == 0
    with open(result_file) as handle:
        checked = json.load(handle)
    assert not checked.get("failed") and checked["events_added"] > 0, checked
    db = StateDB(state_db_url)
    try:
        assert db.scalar("SELECT count(*) FROM task_events") == 0  # the check run stored nothing
        assert db.scalar("SELECT count(*) FROM globus_tasks") == 2
    finally:
        db.close()
    assert first["tasks"][0]["task_id"] != real["tasks"][0]["task_id"]
    emulator.wait_idle()
