# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""dir_trie_sync through ansible-playbook with a top-level directory named ``~`` where a path of ``/``
makes Globus read it as the home directory: its files are quarantined, the rest goes, and it is never
deleted there."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from globus_setup import DST, SRC
from test_dir_trie_sync_delivery import run, write


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()
    yield
    emulator.reset()


def test_a_top_level_tilde_directory_is_quarantined_and_never_deleted_in_the_home(ansible, emulator, tmp_path):
    name = "h" + uuid.uuid4().hex[:8]
    root = str(emulator.root / "src" / name)
    write(os.path.join(root, name, "a.dat"), b"kept")
    write(os.path.join(root, "~", "b.dat"), b"home?")
    args = {"job": name, "src_dir": root, "source_collection": SRC, "source_path": "/" + name,
            "destinations": [{"collection": DST, "path": "/"}], "state_db": str(tmp_path / "state.db"),
            "index_dir": str(tmp_path), "lock_file": str(tmp_path / "job.lock"), "delete_destination": True}
    replica = os.path.join(str(emulator.root / "dst"), name, "a.dat")

    first = run(ansible, emulator, args)
    assert [t["paths"] for t in first["tasks"]] == [[name + "/a.dat"]]
    assert [q["path"] for q in first["quarantined"]["files"]] == ["~/b.dat"]
    assert "home directory" in first["quarantined"]["files"][0]["reason"]
    with open(replica, "rb") as handle:
        assert handle.read() == b"kept"

    shutil.rmtree(os.path.join(root, "~"))
    second = run(ansible, emulator, args)
    assert second["deletes"] == []
    assert any("not deleted" in w and "home directory" in w for w in second.get("warnings", [])), second
    assert os.path.isfile(replica)
    third = run(ansible, emulator, args)
    assert third["deletes"] == [] and third["tasks"] == [] and third["pending"] == 0
    assert os.path.isfile(replica)
