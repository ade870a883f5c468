# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The facility portal as epn_rsync and epn_alert meet it unattended: 5xx answers, error bodies,
plain http, local times, users coming back, visits held back, the portal down. Real ansible-playbook
runs against the portal test server, the harness sshd and the SMTP sink."""

from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.scidata.replication.tests.portal.epn_site import (
    make_epn,
    portal_args,
    portal_config,
    query,
    ssh_args,
    tree,
    visit,
    when,
)
from ansible_collections.scidata.replication.tests.portal.portal_server import PortalServer

RSYNC = "scidata.replication.epn_rsync"
CAP_MAP = {"42001": "projP", "42002": "projP", "42003": "projP", "42004": "projP"}


def rsync_args(sshd, portal, tmp_path, **extra):
    args = ssh_args(sshd.info, src_prefix=str(tmp_path / "src"), beamline="MX", epn_cap_map=CAP_MAP,
                    dest_root=str(tmp_path / "dest"), state_db=str(tmp_path / "state.db"),
                    lock_file=str(tmp_path / "run.lock"), from_portal=True)
    args.update(portal_args(portal))
    args.update(extra)
    return args


def api_statuses(portal):
    return [r["status"] for r in portal.state.requests()]


@pytest.fixture
def portal():
    with PortalServer(portal_config([visit("42001a", when(days=-3), when(days=-2))])) as server:
        yield server


def test_portal_5xx_is_retried_with_backoff_then_fails_clearly(ansible, sshd, portal, tmp_path):
    make_epn(tmp_path / "src" / "MX", "42001a", {"f.cbf": b"f"})
    portal.state.add_fault(503, {"meta": {"error_message": "maintenance"}}, count=2)
    args = rsync_args(sshd, portal, tmp_path, portal_retries=2)
    result, _out = ansible.run(RSYNC, args)
    assert not result.get("failed") and result["synced"] == ["42001a"], result
    assert api_statuses(portal)[:3] == [503, 503, 200]

    portal.state.add_fault(502, "<html>Bad gateway</html>", count=None)
    result, _out = ansible.run(RSYNC, dict(args, portal_retries=1))
    assert result.get("failed") and "HTTP 502" in result["msg"] and "(after 2 attempts)" in result["msg"], result
    assert api_statuses(portal)[-2:] == [502, 502]


def test_portal_error_message_in_a_200_answer_is_quoted(ansible, sshd, portal, tmp_path):
    portal.state.add_fault(200, {"meta": {"error_message": "Equipment calendar is being rebuilt"}},
                           path_prefix="/api/v1/equipment/")
    result, _out = ansible.run(RSYNC, rsync_args(sshd, portal, tmp_path))
    assert result.get("failed"), result
    assert 'the portal said "Equipment calendar is being rebuilt"' in result["msg"]


def test_plain_http_portal_is_refused_unless_allowed(ansible, sshd, portal, tmp_path):
    make_epn(tmp_path / "src" / "MX", "42001a", {"f.cbf": b"f"})
    result, _out = ansible.run(RSYNC, rsync_args(sshd, portal, tmp_path, portal_allow_http=False))
    assert result.get("failed") and "plain http://" in result["msg"] and "portal_allow_http" in result["msg"], result
    assert portal.state.requests() == []  # no password was sent
    result, output = ansible.run(RSYNC, rsync_args(sshd, portal, tmp_path))
    assert not result.get("failed") and result["synced"] == ["42001a"], result
    assert "travel unencrypted" in output


def local_time(zone, **delta):
    """A time ``delta`` from now as the facility's wall clock shows it, without an offset."""
    from zoneinfo import ZoneInfo

    now = datetime.datetime.now(ZoneInfo(zone)) + datetime.timedelta(**delta)
    return now.replace(tzinfo=None).isoformat(timespec="seconds")


def test_portal_timezone_keeps_a_running_visit_west_of_utc_from_syncing(ansible, sshd, tmp_path):
    zone = "America/Los_Angeles"  # UTC-7 or -8: read as UTC, this visit ended hours ago
    visits = [visit("42002a", local_time(zone, hours=-1), local_time(zone, hours=2))]
    make_epn(tmp_path / "src" / "MX", "42002a", {"f.cbf": b"f"})
    with PortalServer(portal_config(visits)) as server:
        result, _out = ansible.run(RSYNC, rsync_args(sshd, server, tmp_path, portal_timezone=zone))
    assert not result.get("failed") and result["synced"] == [], result
    assert {"epn": "42002a", "reason": "EPN has a visit still running"} in result["held_back"]
    assert not os.path.exists(str(tmp_path / "dest" / "projP" / "42002a"))

    result, _out = ansible.run(RSYNC, rsync_args(sshd, server, tmp_path, portal_timezone="Mars/Olympus_Mons"))
    assert result.get("failed") and "not an IANA time zone name" in result["msg"], result


def test_a_later_visit_of_a_synced_epn_queues_it_again(ansible, sshd, portal, tmp_path):
    src = tmp_path / "src" / "MX"
    make_epn(src, "42001a", {"first.cbf": b"1" * 10})
    args = rsync_args(sshd, portal, tmp_path)
    result, _out = ansible.run(RSYNC, args)
    assert result["synced"] == ["42001a"], result
    result, _out = ansible.run(RSYNC, args)
    assert result["synced"] == [] and result.get("requeued", []) == [], result

    # The users came back for a second visit of the same EPN, which ended after the last sync.
    synced_at = query(args["state_db"], "SELECT last_synced_at FROM epns")[0]["last_synced_at"]
    ended = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    assert ended.timestamp() > synced_at
    portal.state.set_visits("101", [visit("42001a", when(days=-3), when(days=-2)),
                                    visit("42001a", when(hours=-5), ended.isoformat(timespec="seconds"))])
    make_epn(src, "42001a", {"second.cbf": b"2" * 20})
    result, _out = ansible.run(RSYNC, args)
    assert not result.get("failed") and result["synced"] == ["42001a"] and result.get("requeued") == ["42001a"], result
    assert set(tree(tmp_path / "dest" / "projP" / "42001a" / "data")) == {"first.cbf", "second.cbf"}
    result, _out = ansible.run(RSYNC, args)
    assert result["synced"] == [] and result["requeued"] == [], result


def test_held_back_reports_visits_that_ended_after_a_running_visit_started(ansible, sshd, tmp_path):
    visits = [visit("42003a", when(hours=-2), when(days=1)),             # still running
              visit("42004a", when(minutes=-50), when(minutes=-10))]     # started and ended after it started
    with PortalServer(portal_config(visits)) as server:
        result, _out = ansible.run(RSYNC, rsync_args(sshd, server, tmp_path))
    assert not result.get("failed") and result["synced"] == [], result
    assert {"epn": "42004a", "reason": "visit ended after a visit still running started"} in result["held_back"]
    assert {"epn": "42003a", "reason": "EPN has a visit still running"} in result["held_back"]


def test_alert_is_sent_without_details_when_the_portal_is_down(ansible, sshd, smtp_sink, portal, tmp_path):
    make_epn(tmp_path / "src" / "MX", "99001a", {"f": b"x"})
    portal.state.add_fault(503, {"meta": {"error_message": "down for maintenance"}}, count=None)
    args = ssh_args(sshd.info, src_prefix=str(tmp_path / "src"), beamline="MX", epn_cap_map=CAP_MAP,
                    state_db=str(tmp_path / "state.db"), lock_file=str(tmp_path / "alert.lock"),
                    mail_from="replication@example.org", mail_to=["dm@example.org"], smtp_host="127.0.0.1",
                    smtp_port=smtp_sink.info["port"], smtp_timeout=5, portal_retries=1, **portal_args(portal))
    before = len(smtp_sink.messages())
    result, _out = ansible.run("scidata.replication.epn_alert", args)
    assert not result.get("failed") and result["sent"] is True and result["alerted"] == ["99001a"], result
    assert "down for maintenance" in result["portal_error"]
    messages = smtp_sink.messages()
    assert len(messages) == before + 1
    text = messages[-1].get_body(preferencelist=("plain",)).get_content()
    assert "Visit details are missing: the facility portal could not be read" in text
    assert "99001a" in text
    assert query(args["state_db"], "SELECT epn FROM epns WHERE alerted_at IS NOT NULL") == [{"epn": "99001a"}]
