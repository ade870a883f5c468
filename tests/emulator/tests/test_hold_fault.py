# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``hold`` fault stops a client at a known point of a request, before or after the service acts."""

from __future__ import annotations

import threading

import globus_sdk
import pytest
from emu_support import CLIENT_ID, CLIENT_SECRET, DST_ID, SRC_ID, TRANSFER_RS, poll, transfer_scope, write


def submit_in_background(tc):
    """Submit one transfer on a thread; returns (thread, outcome dict filled when it ends)."""
    data = globus_sdk.TransferData(SRC_ID, DST_ID)
    data.add_item("/a.txt", "/a.txt")
    outcome = {}

    def submit():
        try:
            outcome["result"] = tc.submit_transfer(data)
        except Exception as exc:  # reported to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    return thread, outcome


def test_hold_before_keeps_the_request_from_the_service(tc, emulator, src):
    write(src, "a.txt", "aaaa")
    rule = emulator.add_fault(kind="hold", method="POST", http_path=r"^/v0\.10/transfer$", count=1)
    thread, outcome = submit_in_background(tc)
    poll(lambda: emulator.fault(rule)["held"] == 1)
    assert emulator.tasks() == [] and thread.is_alive()
    emulator.release(rule)
    thread.join(30)
    # The dropped connection is a network error to the SDK, which resends the same document.
    assert outcome["result"]["code"] == "Accepted", outcome
    assert [e["status"] for e in emulator.requests(r"^/v0\.10/transfer$")] == [None, 202]
    assert len(emulator.tasks()) == 1 and emulator.fault(rule)["held"] == 0


def test_hold_after_creates_the_task_and_keeps_the_reply(tc, emulator, src):
    write(src, "a.txt", "aaaa")
    rule = emulator.add_fault(kind="hold", phase="after", method="POST", http_path=r"^/v0\.10/transfer$", count=1)
    thread, outcome = submit_in_background(tc)
    poll(lambda: emulator.fault(rule)["held"] == 1)
    tasks = emulator.tasks()
    assert len(tasks) == 1 and thread.is_alive() and "result" not in outcome
    emulator.release(rule)
    thread.join(30)
    assert outcome["result"]["task_id"] == tasks[0]["task_id"], outcome


def test_hold_applies_to_auth_requests(emulator):
    rule = emulator.add_fault(kind="hold", phase="after", http_path="^/v2/oauth2/token$", count=1)
    auth_client = globus_sdk.ConfidentialAppAuthClient(CLIENT_ID, CLIENT_SECRET)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(
        tokens=auth_client.oauth2_client_credentials_tokens(requested_scopes=transfer_scope())), daemon=True)
    thread.start()
    poll(lambda: emulator.fault(rule)["held"] == 1)
    assert "tokens" not in outcome
    emulator.release(rule)
    thread.join(30)
    assert TRANSFER_RS in outcome["tokens"].by_resource_server


def test_reset_lets_held_requests_go(tc, emulator, src):
    write(src, "a.txt", "aaaa")
    rule = emulator.add_fault(kind="hold", method="POST", http_path=r"^/v0\.10/transfer$", count=1, seconds=300)
    thread, _outcome = submit_in_background(tc)
    poll(lambda: emulator.fault(rule)["held"] == 1)
    emulator.reset()
    thread.join(30)
    assert not thread.is_alive()


def test_hold_rule_is_checked():
    from globus_emulator.faults import FaultRules

    with pytest.raises(ValueError, match="phase"):
        FaultRules().add({"kind": "hold", "phase": "during"})
