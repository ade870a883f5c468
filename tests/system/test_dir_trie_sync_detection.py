# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""dir_trie_sync through ansible-playbook: a same-size rewrite with the mtime set back reaches the
destination with compare=hash, and what a run reports of deliveries to some destinations only."""

from __future__ import annotations

import os
import time

import test_dir_trie_sync_delivery as delivery
from globus_setup import DST, DST2, client_env
from test_dir_trie_sync_delivery import MODULE, read, run, write

# The job of one destination, and a clean emulator around each test.
job = delivery.job
clean_emulator = delivery.clean_emulator


def test_hash_sends_a_same_size_rewrite_with_the_mtime_set_back(ansible, emulator, job):
    args, root = dict(job["args"], compare="hash"), job["root"]
    path = os.path.join(root, "out", "result.dat")
    run(ansible, emulator, args)
    run(ansible, emulator, args)
    assert read(os.path.join(job["dst"], "out", "result.dat")) == b"version 1"
    before = os.stat(path).st_mtime_ns
    time.sleep(0.05)
    write(path, b"version 2")
    os.utime(path, ns=(before, before))
    plan, _output = ansible.run(MODULE, args, extra_env=client_env(emulator), check=True)
    assert plan["changed"] is True and plan["counts"]["modified"] == 1
    assert read(os.path.join(job["dst"], "out", "result.dat")) == b"version 1"
    sent = run(ansible, emulator, args)
    assert [(t["paths"], t["sync_level"]) for t in sent["tasks"]] == [(["out/result.dat"], "checksum")]
    assert read(os.path.join(job["dst"], "out", "result.dat")) == b"version 2"
    again = run(ansible, emulator, args)
    assert again["changed"] is False and again["pending"] == 0 and again["tasks"] == []


def test_a_delivery_to_one_of_two_destinations_is_counted_for_it(ansible, emulator, job):
    name = job["name"]
    args = dict(job["args"], destinations=job["args"]["destinations"] + [{"collection": DST2, "path": "/" + name}])
    emulator.add_fault(kind="fail", path_prefix="/%s/" % name, collection_id=DST2, code="ENDPOINT_ERROR",
                       description="injected failure")
    run(ansible, emulator, args)
    second = run(ansible, emulator, args, wait=False)
    settled = second["settled"]
    assert (settled["succeeded"], settled["failed"], settled["files_transferred"]) == (1, 1, 2)
    assert settled["destinations"] == [
        dict(destination_collection=DST, destination_path="/%s-out" % name, files_transferred=2),
        dict(destination_collection=DST2, destination_path="/" + name, files_transferred=0)]
    assert second["pending"] == 2
    assert read(os.path.join(job["dst"], "out", "result.dat")) == b"version 1"
