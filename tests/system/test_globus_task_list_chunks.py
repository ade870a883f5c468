# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The task_list refresh of many tasks keeps every URL within 8 KiB, in few requests."""

from __future__ import annotations

import math
import uuid
from urllib.parse import urlencode

from ansible_collections.scidata.replication.plugins.module_utils import _globus, _transfers
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state
from globus_setup import CONFIDENTIAL, SECRET

# The production URL is what a front end sees; the emulator's own URL is shorter.
PRODUCTION_TASK_LIST = "https://transfer.api.globus.org/v0.10/task_list"


def test_refreshing_1000_tasks_keeps_every_url_within_8_kib(emulator, monkeypatch, tmp_path):
    emulator.reset()
    for name, value in emulator.env.items():
        monkeypatch.setenv(name, value)
    client = _globus.transfer_client({"client_id": CONFIDENTIAL, "client_secret": SECRET, "max_retries": 1})
    db = open_state(str(tmp_path / "state.db"))
    task_ids = [str(uuid.uuid4()) for _number in range(1000)]
    try:
        _transfers.refresh_tasks(db, client, task_ids)
    finally:
        db.close()
    requests = emulator.admin("GET", "/_emulator/requests?path=task_list")["requests"]
    requests = [r for r in requests if r["path"].endswith("/task_list")]
    lengths = [len(PRODUCTION_TASK_LIST + "?" + urlencode(r["query"])) for r in requests]
    assert lengths and max(lengths) <= 8192, lengths
    asked = [task_id for r in requests for task_id in r["query"]["filter"][len("task_id:"):].split(",")]
    assert sorted(asked) == sorted(task_ids)  # every id asked for once
    per_request = max(len(r["query"]["filter"].split(",")) for r in requests)
    assert len(requests) <= math.ceil(len(task_ids) / per_request) + 2
