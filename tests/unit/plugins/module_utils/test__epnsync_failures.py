# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading rsync's stderr for failures that are not the EPN's, and rsync's stale temporary files."""

from __future__ import annotations

import os

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._epnsync import (
    remove_stale_temp_files,
    source_missing,
    unreachable,
)

CLOSED = "\nrsync: connection unexpectedly closed (0 bytes received so far) [Receiver]\n"


@pytest.mark.parametrize("stderr, line", [
    ("ssh: connect to host 10.0.0.5 port 22: Connection refused" + CLOSED,
     "ssh: connect to host 10.0.0.5 port 22: Connection refused"),
    ("ssh: connect to host sftp.example.org port 2222: Connection timed out" + CLOSED,
     "ssh: connect to host sftp.example.org port 2222: Connection timed out"),
    ("ssh: connect to host sftp.example.org port 22: No route to host" + CLOSED,
     "ssh: connect to host sftp.example.org port 22: No route to host"),
    ("ssh: connect to host sftp.example.org port 22: Network is unreachable" + CLOSED,
     "ssh: connect to host sftp.example.org port 22: Network is unreachable"),
    ("ssh: Could not resolve hostname sftp.example.org: Name or service not known" + CLOSED,
     "ssh: Could not resolve hostname sftp.example.org: Name or service not known"),
    ("kex_exchange_identification: Connection closed by remote host" + CLOSED,
     "kex_exchange_identification: Connection closed by remote host"),
    ("Connection timed out during banner exchange" + CLOSED, "Connection timed out during banner exchange"),
])
def test_connection_level_failures_are_recognised(stderr, line):
    assert unreachable(stderr) == line


@pytest.mark.parametrize("stderr", [
    CLOSED,
    "Connection to 10.0.0.5 closed by remote host." + CLOSED,  # dropped mid-transfer: charged, retried
    'rsync: [sender] change_dir "/data/MX/1a" failed: No such file or directory (2)\n',
    "",
])
def test_other_failures_are_not_unreachable(stderr):
    assert unreachable(stderr) is None


def test_source_missing_only_for_the_epn_folder_itself():
    err = 'rsync: [sender] change_dir "/data/MX/12345a" failed: No such file or directory (2)\n'
    assert source_missing(err, "/data/MX/12345a/")
    assert not source_missing(err, "/data/MX/12345b/")
    inner = 'rsync: [sender] link_stat "/data/MX/12345a/sub/x" failed: No such file or directory (2)\n'
    assert not source_missing(inner, "/data/MX/12345a/")


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path):
    keep = ["big.h5", ".info", ".rsync-partial/big.h5", "sub/.notes", "sub/run.tar.gz1234"]
    stale = [".big.h5.Zz9Yy8", "sub/.frame\udcff.cbf.a1B2c3"]
    for name in keep + stale:
        path = os.path.join(str(tmp_path), name)
        os.makedirs(os.path.dirname(os.fsencode(path)), exist_ok=True)
        with open(os.fsencode(path), "wb") as handle:
            handle.write(b"x")
    removed = remove_stale_temp_files(str(tmp_path) + "/")
    assert sorted(os.path.relpath(p, str(tmp_path)) for p in removed) == sorted(stale)
    for name in keep:
        assert os.path.exists(os.path.join(str(tmp_path), name))
    assert remove_stale_temp_files(str(tmp_path / "not-there")) == []
