# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for the SFTP side of the EPN core against the harness's real OpenSSH sshd (paramiko,
known host keys only), mxsync's ignore.yml, and the alert plan."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._epn import (
    SftpSession,
    epn_directory,
    list_epn_folders,
    plan_alert,
    read_ignore_file,
    visit_details,
    walk_epn_folder,
    walk_epn_folders,
)
from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError, RsyncError


def session(info, **overrides):
    kwargs = dict(port=info["port"], key_file=info["key_file"], known_hosts_file=info["known_hosts"],
                  connect_timeout=5)
    kwargs.update(overrides)
    return SftpSession(info["host"], info["user"], **kwargs)


def params(info, **overrides):
    result = dict(host=info["host"], user=info["user"], port=info["port"], key_file=info["key_file"],
                  known_hosts_file=info["known_hosts"], connect_timeout=5, server_alive_interval=15)
    result.update(overrides)
    return result


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "data" / "MX"
    for epn, files in {"1a": {"a": 3, "sub/b": 4, ".info": 1, ".skip": 9, ".dir/c": 9}, "2b": {},
                       "-e sh": {"x": 1}, "3c": {"deep/er/est": 7}}.items():
        (root / epn).mkdir(parents=True)
        for name, size in files.items():
            path = root / epn / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * size)
    (root / "file.txt").write_text("not a folder")
    os.symlink(str(root / "1a"), str(root / "4d"))
    os.utime(str(root / "3c" / "deep" / "er" / "est"), (2000000000, 2000000000))
    return root


def test_listing_and_walking(sshd, site):
    with session(sshd.info) as sftp:
        epns, rejected = list_epn_folders(sftp, str(site))
        assert epns == ["1a", "2b", "3c"]  # no files, no symbolic links
        assert rejected == [{"epn": "-e sh", "reason": "EPN starts with '-'"}]
        walk = walk_epn_folder(sftp, str(site / "1a"))
        assert (walk["size_bytes"], walk["file_count"], walk["errors"]) == (8, 3, [])
        assert walk_epn_folder(sftp, str(site / "3c"))["newest_mtime"] == 2000000000.0
        empty = walk_epn_folder(sftp, str(site / "2b"))
        assert (empty["size_bytes"], empty["file_count"]) == (0, 0) and empty["newest_mtime"] > 0
        with pytest.raises(RsyncError, match="cannot read"):
            walk_epn_folder(sftp, str(site / "nope"))
        with pytest.raises(RsyncError, match="cannot list"):
            list_epn_folders(sftp, str(site / "nope"))


def test_parallel_walk_matches_a_single_session(sshd, site):
    one = walk_epn_folders(params(sshd.info), str(site), ["1a", "2b", "3c"], workers=1)
    three = walk_epn_folders(params(sshd.info), str(site), ["1a", "2b", "3c"], workers=3)
    assert one == three and sorted(one) == ["1a", "2b", "3c"]


def test_unknown_and_changed_host_keys_are_refused(sshd, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(RsyncError, match="unknown host keys are never accepted"):
        session(sshd.info, known_hosts_file=str(empty)).open()
    assert empty.read_text() == ""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    other = tmp_path / "other_known_hosts"
    other.write_text("[127.0.0.1]:%d %s\n" % (sshd.info["port"], " ".join((tmp_path / "k.pub").read_text().split()[:2])))
    with pytest.raises(RsyncError, match="does not match"):
        session(sshd.info, known_hosts_file=str(other)).open()
    with pytest.raises(RsyncError, match="authentication"):
        session(sshd.info, key_file=str(tmp_path / "k")).open()
    with pytest.raises(ConfigError, match="known_hosts_file"):
        session(sshd.info, known_hosts_file=str(tmp_path / "missing")).open()


def test_epn_directory():
    assert epn_directory("/data", "MX2") == "/data/MX2"
    assert epn_directory("/data/", None) == "/data"
    assert epn_directory("/", None) == "/"
    for prefix, beamline in (("data", None), ("/data/../etc", None), ("/data", "../x"), ("/data", "-x")):
        with pytest.raises(ConfigError):
            epn_directory(prefix, beamline)


def test_read_ignore_file(tmp_path):
    path = tmp_path / "ignore.yml"
    path.write_text("previouslySynched:\n- 12345a\n- 12346\n- null\n")
    assert read_ignore_file(str(path)) == ["12345a", "12346"]
    path.write_text("")
    assert read_ignore_file(str(path)) == []
    path.write_text("{}\n")
    assert read_ignore_file(str(path)) == []
    for text in ("- a\n", "previouslySynched: 3\n", "a: [\n"):
        path.write_text(text)
        with pytest.raises(ConfigError):
            read_ignore_file(str(path))
    with pytest.raises(ConfigError):
        read_ignore_file(str(tmp_path / "missing.yml"))


def person(first, last):
    return {"first_names": first, "last_name": last, "email": "%s@example.org" % first.lower()}


def test_visit_details_take_the_latest_visit_and_every_scientist():
    visits = [
        {"epn": "9a", "start_time": "2025-01-01T00:00:00Z", "end_time": "2025-01-02T00:00:00Z",
         "principal_scientist": person("Old", "Pi"), "data_scientists": [person("Alan", "Turing")]},
        {"epn": "9a", "start_time": "2025-02-01T00:00:00Z", "end_time": "2025-02-02T00:00:00Z", "equipment_id": "101",
         "principal_scientist": person("Ada", "Lovelace"),
         "data_scientists": [person("Grace", "Hopper"), person("Alan", "Turing")]},
        {"epn": "8b", "start_time": "x", "end_time": "y", "principal_scientist": None, "data_scientists": "junk"},
        {"no": "epn"},
    ]
    details = visit_details(visits)
    assert details["9a"]["principal_scientist"]["last_name"] == "Lovelace" and details["9a"]["equipment_id"] == "101"
    assert [p["first_names"] for p in details["9a"]["data_scientists"]] == ["Grace", "Alan"]
    assert details["8b"]["principal_scientist"] is None and details["8b"]["data_scientists"] == []


def test_plan_alert_dedup():
    now = 1000000.0
    day = 86400
    listed = ["1a", "2b", "3c", "4d"]
    alerted = {"2b": now - 2 * day, "3c": now - 8 * day}
    visits = [{"epn": "2b", "start_time": "a", "end_time": "b"}, {"epn": "4d", "start_time": "a", "end_time": "b"}]
    plan = plan_alert(listed, {"1": "p1"}, visits, alerted, now, 7)
    assert plan["unknown"] == ["2b", "3c", "4d"] and plan["due"] == ["3c", "4d"]
    assert [s["epn"] for s in plan["suppressed"]] == ["2b"]
    assert [d["epn"] for d in plan["with_details"]] == ["4d"] and plan["without_details"] == ["3c"]
    assert plan_alert(listed, {"1": "p1"}, [], alerted, now, 0)["due"] == ["4d"]  # 0: never again
    with pytest.raises(ConfigError):
        plan_alert(listed, {}, [], {}, now, -1)
