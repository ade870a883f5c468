# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""epn_inventory through real ansible-playbook runs over SFTP to the harness's sshd, and the
queue it fills worked through by epn_rsync from_db, on SQLite and PostgreSQL."""

from __future__ import annotations

import os

from ansible_collections.scidata.replication.tests.portal.epn_site import (
    make_epn,
    migrate,
    query,
    rsync_view,
    ssh_args,
    tree,
)

MODULE = "scidata.replication.epn_inventory"
CAP_MAP = {"70001": "projI", "70002": "projI", "70003": "projJ"}


def build_site(root):
    """Three EPNs with fixed times (70001a newest, 70002a oldest) and things that are not counted."""
    epns = {
        "70001a": {"raw/img_0001.cbf": b"a" * 5000, "raw/img_0002.cbf": b"b" * 7000, "notes.txt": b"n" * 11,
                   ".info": b"i" * 3, ".hidden": b"h" * 100, ".cache/junk": b"j" * 100},
        "70002a": {"data.h5": b"d" * 12345},
        "70003a": {"one": b"1" * 10, "deep/er/two": b"2" * 20},
    }
    newest = {"70001a": 1700000300, "70002a": 1700000100, "70003a": 1700000200}
    for epn, files in epns.items():
        base = make_epn(root, epn, files)
        if epn == "70001a":
            os.symlink("/etc", os.path.join(base, "link-to-etc"))  # neither counted nor followed
        for directory, dirnames, filenames in os.walk(base, topdown=False):
            for name in filenames + dirnames:
                os.utime(os.path.join(directory, name), (1600000000, 1600000000), follow_symlinks=False)
            os.utime(directory, (1600000000, 1600000000))
        os.utime(os.path.join(base, sorted(f for f in files if not f.startswith("."))[0]),
                 (newest[epn], newest[epn]))
        if ".hidden" in files:
            os.utime(os.path.join(base, ".hidden"), (1800000000, 1800000000))  # not counted
    make_epn(root, "-e sh", {"x": b"x"})
    (root / "README.txt").write_text("not an EPN folder\n")
    return {"70001a": (5000 + 7000 + 11 + 3, 4, 1700000300.0), "70002a": (12345, 1, 1700000100.0),
            "70003a": (30, 2, 1700000200.0)}


def inventory_rows(url):
    return {r["epn"]: r for r in query(url, "SELECT * FROM epns")}


def test_inventory_rhythm_then_rsync_works_through_the_queue(ansible, sshd, state_db_url, tmp_path):
    root = tmp_path / "src" / "MX"
    expected = build_site(root)
    if state_db_url.startswith("postgresql"):
        migrate(state_db_url)
    args = ssh_args(sshd.info)
    args.update(src_prefix=str(tmp_path / "src"), beamline="MX", state_db=state_db_url,
                lock_file=str(tmp_path / "inventory.lock"), workers=2)

    result, _out = ansible.run(MODULE, args, check=True)
    assert result["changed"] is True and not result.get("failed"), result
    assert result["added"] == ["70001a", "70002a", "70003a"]
    if state_db_url.startswith("postgresql"):
        assert inventory_rows(state_db_url) == {}
    else:
        assert not os.path.exists(state_db_url)

    result, _out = ansible.run(MODULE, args)
    assert result["changed"] is True and result["added"] == ["70001a", "70002a", "70003a"], result
    assert result["rejected"] == [{"epn": "-e sh", "reason": "EPN starts with '-'"}]
    assert result["total_files"] == 7
    rows = inventory_rows(state_db_url)
    assert {epn: (r["size_bytes"], r["file_count"], r["newest_mtime"]) for epn, r in rows.items()} == expected
    assert all(r["state"] == "pending" and r["beamline"] == "MX" and r["source_path"] == str(root / epn)
               for epn, r in rows.items())

    result, _out = ansible.run(MODULE, dict(args, workers=1))
    assert result["changed"] is False and result["unchanged"] == 3 and result["added"] == [], result

    # epn_rsync works through the queue: newest first, two at a time
    sync = ssh_args(sshd.info)
    sync.update(from_db=True, order="DESC", limit=2, src_prefix=str(tmp_path / "src"), epn_cap_map=CAP_MAP,
                dest_root=str(tmp_path / "dest"), state_db=state_db_url, lock_file=str(tmp_path / "sync.lock"))
    result, _out = ansible.run("scidata.replication.epn_rsync", sync)
    assert not result.get("failed") and result["synced"] == ["70001a", "70003a"], result
    result, _out = ansible.run("scidata.replication.epn_rsync", sync)
    assert not result.get("failed") and result["synced"] == ["70002a"], result
    for epn, project in (("70001a", "projI"), ("70002a", "projI"), ("70003a", "projJ")):
        copied = tree(tmp_path / "dest" / project / epn / "data")
        assert copied == rsync_view(root / epn)
        assert len([v for v in copied.values() if v]) == expected[epn][1]  # the inventory counted what rsync copies
    assert {r["state"] for r in inventory_rows(state_db_url).values()} == {"synced"}

    # new data in a synced EPN puts it back in the queue
    make_epn(root, "70002a", {"late.h5": b"l" * 100})
    result, _out = ansible.run(MODULE, args)
    assert result["changed"] is True and result["updated"] == ["70002a"] and result["requeued"] == ["70002a"], result
    row = inventory_rows(state_db_url)["70002a"]
    assert (row["state"], row["size_bytes"], row["file_count"]) == ("pending", 12445, 2)
    result, _out = ansible.run("scidata.replication.epn_rsync", sync)
    assert result["synced"] == ["70002a"] and result["epns"][0]["files"] == 1, result
    assert (tmp_path / "dest" / "projI" / "70002a" / "data" / "late.h5").exists()
