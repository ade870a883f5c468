# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Names that are not valid UTF-8 through the three EPN modules (real ansible-playbook runs, the
harness sshd, SMTP sink and portal test server): bytes on disk exact, shown escaped as ``\\xNN``,
never a crash."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.scidata.replication.tests.portal.epn_site import (
    make_epn,
    portal_args,
    portal_config,
    query,
    ssh_args,
    visit,
    when,
)
from ansible_collections.scidata.replication.tests.portal.portal_server import PortalServer

CAP_MAP = {"80001": "projN", "80002": "projN"}
BAD_FILE = b"frame\xff_0001.cbf"        # Latin-1 era name: not UTF-8
BAD_EPN = b"80009\xe9"                   # an EPN folder whose name is not UTF-8
BAD_FILE_SHOWN = "frame\\xff_0001.cbf"
BAD_EPN_SHOWN = "80009\\xe9"


def bad_site(root):
    """EPN 80001a with a file and a folder named in bytes that are not UTF-8, and a bad EPN folder."""
    base = make_epn(root, "80001a", {"good.cbf": b"g" * 100})
    raw_base = os.fsencode(base)
    with open(os.path.join(raw_base, BAD_FILE), "wb") as handle:
        handle.write(b"b" * 1000)
    os.mkdir(os.path.join(raw_base, b"sub\xfe"))
    with open(os.path.join(raw_base, b"sub\xfe", b"inner\x80.h5"), "wb") as handle:
        handle.write(b"i" * 10)
    os.mkdir(os.path.join(os.fsencode(str(root)), BAD_EPN))
    return base


def log_lines(path):
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]


def test_inventory_lists_and_counts_names_that_are_not_utf8(ansible, sshd, tmp_path):
    root = tmp_path / "src" / "MX"
    bad_site(root)
    log = tmp_path / "inventory.jsonl"
    state_db = str(tmp_path / "state.db")
    args = ssh_args(sshd.info, src_prefix=str(tmp_path / "src"), beamline="MX", state_db=state_db,
                    lock_file=str(tmp_path / "inv.lock"), log_file=str(log))
    result, _out = ansible.run("scidata.replication.epn_inventory", args)
    assert not result.get("failed"), result
    assert result["added"] == ["80001a"]
    assert result["epns"][0]["file_count"] == 3 and result["epns"][0]["size_bytes"] == 1110
    assert result["rejected"] == [{"epn": BAD_EPN_SHOWN, "reason": "EPN is not valid UTF-8"}]
    assert query(state_db, "SELECT epn, file_count, size_bytes FROM epns") == [
        {"epn": "80001a", "file_count": 3, "size_bytes": 1110}]
    assert log_lines(log)[-1]["rejected"] == result["rejected"]


def test_alert_is_sent_when_a_listing_holds_names_that_are_not_utf8(ansible, sshd, smtp_sink, tmp_path):
    root = tmp_path / "src" / "MX"
    bad_site(root)
    make_epn(root, "90001a", {"f": b"x"})  # unknown: no project in the map
    state_db = str(tmp_path / "state.db")
    log = tmp_path / "alert.jsonl"
    before = len(smtp_sink.messages())
    args = ssh_args(sshd.info, src_prefix=str(tmp_path / "src"), beamline="MX", epn_cap_map=CAP_MAP,
                    state_db=state_db, lock_file=str(tmp_path / "alert.lock"), log_file=str(log),
                    mail_from="replication@example.org", mail_to=["dm@example.org"], smtp_host="127.0.0.1",
                    smtp_port=smtp_sink.info["port"], smtp_timeout=5)
    result, _out = ansible.run("scidata.replication.epn_alert", args)
    assert not result.get("failed") and result["sent"] is True, result
    assert result["alerted"] == ["90001a"]
    assert result["rejected"] == [{"epn": BAD_EPN_SHOWN, "reason": "EPN is not valid UTF-8"}]
    assert len(smtp_sink.messages()) == before + 1
    assert log_lines(log)[-1]["sent"] is True


def test_rsync_check_diff_and_apply_with_names_that_are_not_utf8(ansible, sshd, tmp_path):
    bad_site(tmp_path / "src" / "MX")
    state_db = str(tmp_path / "state.db")
    log = tmp_path / "rsync.jsonl"
    args = ssh_args(sshd.info, src_prefix=str(tmp_path / "src"), beamline="MX", epn_cap_map=CAP_MAP,
                    dest_root=str(tmp_path / "dest"), state_db=state_db, lock_file=str(tmp_path / "run.lock"),
                    epns=["80001a"], log_file=str(log))
    data = os.fsencode(str(tmp_path / "dest" / "projN" / "80001a" / "data"))

    result, _out = ansible.run("scidata.replication.epn_rsync", args, check=True)
    assert result["changed"] is True and not result.get("failed"), result
    paths = [c["path"] for c in result["epns"][0]["changes"]]
    assert BAD_FILE_SHOWN in paths and "sub\\xfe/inner\\x80.h5" in paths
    assert not os.path.exists(data)

    result, _out = ansible.run("scidata.replication.epn_rsync", args, extra_env={"ANSIBLE_DIFF_ALWAYS": "1"})
    assert not result.get("failed") and result["synced"] == ["80001a"], result
    assert "80001a: >f+++++++++ %s" % BAD_FILE_SHOWN in result["diff"]["prepared"]
    with open(os.path.join(data, BAD_FILE), "rb") as handle:
        assert handle.read() == b"b" * 1000
    with open(os.path.join(data, b"sub\xfe", b"inner\x80.h5"), "rb") as handle:
        assert handle.read() == b"i" * 10
    assert query(state_db, "SELECT state FROM epns") == [{"state": "synced"}]
    assert [e["event"] for e in log_lines(log) if "event" in e and not e["check_mode"]] == ["plan", "start", "finish"]


@pytest.fixture
def surrogate_portal():
    visits = [visit("80002a", when(days=-3), when(days=-2)), visit("8000\udcff", when(days=-3), when(days=-2))]
    with PortalServer(portal_config(visits)) as server:
        yield server


def test_portal_epn_with_a_lone_surrogate_is_rejected_not_fatal(ansible, sshd, surrogate_portal, tmp_path):
    make_epn(tmp_path / "src" / "MX", "80002a", {"f.cbf": b"f" * 10})
    state_db = str(tmp_path / "state.db")
    args = ssh_args(sshd.info, src_prefix=str(tmp_path / "src"), beamline="MX", epn_cap_map=CAP_MAP,
                    dest_root=str(tmp_path / "dest"), state_db=state_db, lock_file=str(tmp_path / "run.lock"),
                    from_portal=True, **portal_args(surrogate_portal))
    result, _out = ansible.run("scidata.replication.epn_rsync", args)
    assert not result.get("failed") and result["synced"] == ["80002a"], result
    assert result["rejected"] == [{"epn": "8000\\xff", "reason": "EPN is not valid UTF-8"}]
    assert [r["epn"] for r in query(state_db, "SELECT epn FROM epns")] == ["80002a"]
