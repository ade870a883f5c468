# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""dir_trie_sync's invariant, as a stateful property against the Globus API emulator: after a run
that reports nothing pending, every destination equals the source, whatever creates, rewrites,
deletes, renames, empty directories, failed or still running tasks and destinations added or
removed came before.

Runs are the module's core (``DirTrieSync``) in this process with a real SQLite state database and
a real globus_sdk client; the emulator really copies and deletes, so the destination trees on disk
are what is compared. A check run's scan leaves the state database to the real runs meanwhile.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from ansible_collections.scidata.replication.plugins.module_utils import _globus, _pathindex, _state, _transfers
from globus_setup import CONFIDENTIAL, DST, DST2, SECRET, SRC

FILES = ["f", "a/f", "a/g", "a/b/f", "c/d/f"]
DIRS = ["e", "a/e", "c", "c/d"]
CONTENTS = [b"1", b"2", b"22", b"a longer content"]
EXAMPLES = int(os.environ.get("DIR_TRIE_SYNC_EXAMPLES", "200"))


def tree(root):
    """(files {relative path: bytes}, directories) under root; None when root does not exist."""
    if not os.path.isdir(root):
        return None
    files, dirs = {}, set()
    for directory, subdirs, names in os.walk(root):
        rel = os.path.relpath(directory, root)
        for name in subdirs:
            dirs.add(os.path.normpath(os.path.join(rel, name)))
        for name in names:
            with open(os.path.join(directory, name), "rb") as handle:
                files[os.path.normpath(os.path.join(rel, name))] = handle.read()
    return files, dirs


def config_for(job, src_dir, index_path, destinations):
    options = dict((name, spec.get("default")) for name, spec in _transfers.TRANSFER_ARGUMENT_SPEC.items())
    options.update(delete_destination_extra=False, filter_rules=[])
    return dict(job=job, src_dir=src_dir, index_path=index_path, source_collection=SRC, source_path="/" + job,
                destinations=destinations, include=[], exclude=[], items_per_task=3, max_submissions_per_run=10,
                max_active_tasks=3, identity_max_open_tasks=100, label="{route} {date}", sample_size=20,
                delete_destination=True,
                scan_workers=1, options=options, skip_rel=[],
                # Injected failures pass: no backoff, no quarantine (tested on their own), so runs converge.
                max_file_failures=1000, file_retry_backoff=0)


def nothing_pending(result):
    return not (result["pending"] or result["in_flight"] or result["open_tasks"] or result["deletes_pending"]
                or result["counts"]["empty_dirs"] or result["directory_errors"])


class Replication(object):
    """One job: its source tree, index, state database and destinations (collection, path, directory)."""

    def __init__(self, emulator, workdir, client):
        self.emulator = emulator
        self.client = client
        self.job = "p" + uuid.uuid4().hex[:10]
        self.workdir = os.path.join(workdir, self.job)
        os.makedirs(self.workdir)
        self.src = str(emulator.root / "src" / self.job)
        os.makedirs(self.src)
        self.db = _state.open_state(os.path.join(self.workdir, "state.db"))
        self.index_path = os.path.join(self.workdir, "index.sqlite")
        self.destinations = [(DST, "/rep-" + self.job, str(emulator.root / "dst" / ("rep-" + self.job)))]
        self.added = 0
        self.clock = time.time() - 86400

    def touch(self, path):
        """Writes get distinct mtimes 0.4 s apart: some share a whole second, as real rewrites do."""
        self.clock += 0.4
        os.utime(path, ns=(int(self.clock * 1e9), int(self.clock * 1e9)))

    def run(self, wait):
        destinations = [dict(collection=c, path=p) for c, p, _d in self.destinations]
        config = config_for(self.job, self.src, self.index_path, destinations)
        with _pathindex.opened_index(self.index_path, "mtime_size", "sha256", False) as index:
            result = _pathindex.DirTrieSync(index, config, self.db, self.client).run()
        if wait:
            self.emulator.wait_idle(timeout=60)
        return result

    def check(self):
        """Every destination holds exactly the source's files and directories."""
        self.emulator.wait_idle(timeout=60)
        expected = tree(self.src)
        for collection, _path, directory in self.destinations:
            assert tree(directory) == expected, (collection, directory)

    def converge(self, rounds=12):
        for _round in range(rounds):
            result = self.run(wait=True)
            if nothing_pending(result):
                self.check()
                return result
        raise AssertionError("still pending after %d runs: %r" % (rounds, result))

    def close(self):
        self.db.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self.src, ignore_errors=True)
        for _collection, _path, directory in self.destinations:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def client(emulator, monkeypatch):
    for key, value in emulator.env.items():
        monkeypatch.setenv(key, value)
    emulator.reset()
    emulator.configure(limits={"requests_per_second": 10000}, progress_interval_seconds=0.05)
    yield _globus.transfer_client(dict(client_id=CONFIDENTIAL, client_secret=SECRET, max_retries=2))
    emulator.configure(limits={"requests_per_second": 20}, progress_interval_seconds=1.0)
    emulator.reset()


def test_every_destination_equals_the_source_after_a_run_with_nothing_pending(emulator, client, tmp_path):
    class Machine(RuleBasedStateMachine):
        def __init__(self):
            super(Machine, self).__init__()
            self.job = Replication(emulator, str(tmp_path), client)

        def path(self, rel):
            return os.path.join(self.job.src, rel)

        @rule(rel=st.sampled_from(FILES), data=st.sampled_from(CONTENTS))
        def write(self, rel, data):
            """Create, rewrite or recreate a file."""
            path = self.path(rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)
            self.job.touch(path)

        @rule(rel=st.sampled_from(FILES))
        def delete(self, rel):
            if os.path.isfile(self.path(rel)):
                os.unlink(self.path(rel))

        @rule(old=st.sampled_from(FILES), new=st.sampled_from(FILES))
        def rename(self, old, new):
            if old != new and os.path.isfile(self.path(old)):
                os.makedirs(os.path.dirname(self.path(new)), exist_ok=True)
                os.rename(self.path(old), self.path(new))

        @rule(rel=st.sampled_from(DIRS))
        def make_dir(self, rel):
            os.makedirs(self.path(rel), exist_ok=True)

        @rule(rel=st.sampled_from(DIRS + ["a"]))
        def remove_dir(self, rel):
            shutil.rmtree(self.path(rel), ignore_errors=True)

        @rule(where=st.sampled_from(["source", "destination"]))
        def fail_next_task(self, where):
            """The next task touching the tree fails at its first file (a transfer, or a delete)."""
            prefix = "/" + self.job.job + "/" if where == "source" else self.job.destinations[-1][1] + "/"
            emulator.add_fault(kind="fail", path_prefix=prefix, count=1, code="ENDPOINT_ERROR",
                               description="injected failure")

        @rule(wait=st.booleans())
        def run(self, wait):
            """A run; without waiting, its tasks are still running at the next one."""
            result = self.job.run(wait)
            if nothing_pending(result):
                self.job.check()

        @precondition(lambda self: len(self.job.destinations) == 1)
        @rule()
        def add_destination(self):
            self.job.added += 1
            path = "/copy-%s-%d" % (self.job.job, self.job.added)
            self.job.destinations.append((DST2, path, str(emulator.root / "dst2" / path.lstrip("/"))))

        @precondition(lambda self: len(self.job.destinations) == 2)
        @rule()
        def remove_destination(self):
            _collection, _path, directory = self.job.destinations.pop()
            emulator.wait_idle(timeout=60)
            shutil.rmtree(directory, ignore_errors=True)

        def teardown(self):
            try:
                emulator.admin("DELETE", "/_emulator/faults")
                self.job.converge()
            finally:
                self.job.close()

    started = time.monotonic()
    run_state_machine_as_test(Machine, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=10, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    print("%d examples in %.0f s" % (EXAMPLES, time.monotonic() - started))


def test_a_check_run_scanning_leaves_the_state_database_to_real_runs(emulator, client, tmp_path, monkeypatch):
    job = Replication(emulator, str(tmp_path), client)
    try:
        with open(os.path.join(job.src, "f"), "wb") as handle:
            handle.write(b"data")
        job.run(wait=False)  # an open task: a check run's refresh has a row to update
        scanning, release = threading.Event(), threading.Event()
        read = _pathindex.TreeReader.read

        def slow_read(reader, *args):
            scanning.set()
            release.wait(60)
            return read(reader, *args)

        monkeypatch.setattr(_pathindex.TreeReader, "read", slow_read)
        outcome = {}

        def check_run():
            db = _state.open_state(os.path.join(job.workdir, "state.db"), check_mode=True)
            config = config_for(job.job, job.src, job.index_path, [dict(collection=DST, path=job.destinations[0][1])])
            try:
                with _pathindex.opened_index(job.index_path, "mtime_size", "sha256", True) as index:
                    outcome["result"] = _pathindex.DirTrieSync(index, config, db, client, check_mode=True).run()
            finally:
                db.close()

        planner = threading.Thread(target=check_run)
        planner.start()
        try:
            assert scanning.wait(60)
            # Another job's real run writes to the same state database while the plan scans.
            other = sqlite3.connect(os.path.join(job.workdir, "state.db"), timeout=2, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("UPDATE globus_tasks SET updated_at = updated_at")
                other.execute("COMMIT")
            finally:
                other.close()
        finally:
            release.set()
            planner.join(60)
        planned = outcome["result"]
        assert planned["counts"]["unchanged"] == 1 and planned["tasks"] == [] and planned["changed"] is False
    finally:
        job.close()


def test_the_first_run_after_a_reset_repairs_a_replica_whose_mtime_looks_current(emulator, client, tmp_path):
    job = Replication(emulator, str(tmp_path), client)
    try:
        source = os.path.join(job.src, "f")
        with open(source, "wb") as handle:
            handle.write(b"good")
        job.touch(source)
        job.converge()
        replica = os.path.join(job.destinations[0][2], "f")
        with open(replica, "wb") as handle:
            handle.write(b"bad!")  # same size, and the mtime the source has
        stamp = os.stat(source).st_mtime_ns
        os.utime(replica, ns=(stamp, stamp))
        assert _pathindex.remove_index(job.index_path)
        resent = job.run(wait=True)
        assert [t["sync_level"] for t in resent["tasks"]] == ["checksum"]
        job.converge()
        with open(replica, "rb") as handle:
            assert handle.read() == b"good"
    finally:
        job.close()
