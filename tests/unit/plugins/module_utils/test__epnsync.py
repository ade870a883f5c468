# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for epn_rsync's engine and the EPN state: leases on SQLite and PostgreSQL, and the
run's decisions (retries, backoff, stop, SSH refusal, check mode) with a scripted runner in
place of rsync so every exit code can be produced on demand."""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._epnsync import (
    EpnRsyncRun,
    EpnStore,
    ssh_problem,
)
from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError, RsyncError
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state

VERSION = "rsync  version 3.5.0  protocol version 32\n"
STATS = ("Number of regular files transferred: 2\nTotal transferred file size: 1,234 bytes\n"
         "Literal data: 1,234 bytes\nMatched data: 0 bytes\n")
HOST_KEY_CHANGED = ("@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
                    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
                    "Host key verification failed.\nrsync: connection unexpectedly closed\n")


@pytest.fixture
def db(state_db_url):
    state = open_state(state_db_url)
    yield state
    state.close()


class Script(object):
    """A runner: per EPN, the (rc, stdout, stderr) of each call in turn; the last one repeats."""

    def __init__(self, outcomes, delay=0.0):
        self.outcomes = outcomes
        self.delay = delay
        self.calls = []
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def __call__(self, argv):
        if argv[-1] == "--version":
            return 0, VERSION, ""
        epn = argv[-2].rstrip("/").rsplit("/", 1)[1]
        with self.lock:
            self.calls.append((epn, argv))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            count = sum(1 for e, _a in self.calls if e == epn)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        sequence = self.outcomes.get(epn, [(0, "<<CHANGED>>>f+++++++++ file\n" + STATS, "")])
        return sequence[min(count, len(sequence)) - 1]


def params(**overrides):
    base = dict(
        epns=None, from_portal=False, from_db=False, order="ASC", limit=50, import_ignore_file=None,
        epn_cap_map={"1": "p1", "2": "p2", "3": "p3", "4": "p4", "5": "p5"}, dest_root=None,
        dest_template="{dest_root}/{project}/{epn}/data/", source_template="{src_prefix}/{beamline}/{epn}/",
        rsync_path="rsync", compress=False, bwlimit=None, timeout=300, partial_dir=".rsync-partial",
        protect_args=True, extra_args=[], workers=1, exit_policy={}, max_attempts=5, run_retries=2,
        retry_delay=0, retry_max_delay=3600, retry_failed=False, force=False, claim_ttl=300,
        host="sftp.example.org", port=22, user="massive", key_file="/keys/id", known_hosts_file="/keys/known_hosts",
        connect_timeout=30, server_alive_interval=15, server_alive_count_max=4, src_prefix="/data", beamline="MX",
        epn_pattern="[A-Za-z0-9._-]+", portal_url=None, equipment=None, validate_certs=True, ca_path=None,
        portal_timeout=30, visit_day_range=30,
    )
    base.update(overrides)
    return base


def run(db, runner, tmp_path, check_mode=False, warnings=None, diff_mode=False, **overrides):
    overrides.setdefault("dest_root", str(tmp_path / "dest"))
    engine = EpnRsyncRun(params(**overrides), db, runner, check_mode=check_mode, diff_mode=diff_mode,
                         warn=(warnings.append if warnings is not None else None))
    return engine.run()


def states(db):
    return {r["epn"]: (r["state"], r["attempts"], r["claimed_by"]) for r in db.query("SELECT * FROM epns")}


# -- leases -------------------------------------------------------------------------------------

def test_a_lease_is_exclusive_until_it_expires(db):
    store = EpnStore(db)
    store.record_candidates([{"epn": "1a", "project": "p1", "source_path": "/data/MX/1a/"}], 100.0)
    states_ok = ["pending", "retry"]
    assert store.claim("1a", "host-a", 10, 100.0, states_ok)
    assert not store.claim("1a", "host-b", 10, 105.0, states_ok)  # held
    assert store.claim("1a", "host-b", 10, 111.0, states_ok)  # expired: taken over
    assert not store.settle("1a", "host-a", 112.0, state="synced")  # host-a lost it
    assert store.renew("host-b", 10, 112.0) == 1
    assert store.settle("1a", "host-b", 113.0, state="synced", last_rc=0, synced_bytes=5)
    row = db.query_one("SELECT * FROM epns WHERE epn = ?", ("1a",))
    assert (row["state"], row["claimed_by"], row["bytes_transferred"], row["last_synced_at"]) == ("synced", None, 5, 113.0)
    assert not store.claim("1a", "host-c", 10, 200.0, states_ok)  # synced EPNs are not in the queue
    assert store.claim("1a", "host-c", 10, 200.0, states_ok + ["synced"])  # unless forced


def test_attempts_are_counted_and_refunded(db):
    store = EpnStore(db)
    store.record_candidates([{"epn": "1a", "project": "p1", "source_path": "/s/"}], 1.0)
    assert store.claim("1a", "me", 10, 1.0, ["pending"])
    first, attempts = store.start_attempt("1a", "me", 2.0)
    assert attempts == 1
    store.finish_attempt(first, 3.0, 255, None, None, "Host key verification failed.")
    store.settle("1a", "me", 3.0, last_rc=255, refund_attempt=True)
    row = db.query_one("SELECT * FROM epns")
    assert (row["attempts"], row["state"], row["last_rc"], row["claimed_by"]) == (0, "pending", 255, None)
    attempt = db.query_one("SELECT * FROM rsync_attempts")
    assert (attempt["rc"], attempt["ended_at"], attempt["stderr_tail"]) == (255, 3.0, "Host key verification failed.")


def test_import_marks_only_unknown_or_untouched_epns(db):
    store = EpnStore(db)
    store.record_candidates([{"epn": "1a", "project": "p1", "source_path": "/s/"},
                             {"epn": "2a", "project": "p2", "source_path": "/s/"}], 1.0)
    store.claim("2a", "me", 10, 1.0, ["pending"])
    store.start_attempt("2a", "me", 1.0)
    assert store.import_synced(["1a", "2a", "3a"], 2.0) == ["1a", "3a"]
    assert store.import_synced(["1a", "2a", "3a"], 3.0) == []
    assert {e: s for e, (s, _a, _c) in states(db).items()} == {"1a": "synced", "2a": "pending", "3a": "synced"}


def test_alerts_keep_the_sync_state(db):
    store = EpnStore(db)
    store.import_synced(["1a"], 1.0)
    store.mark_alerted(["1a", "9z"], 5.0)
    assert store.alerted(["1a", "9z", "8y"]) == {"1a": 5.0, "9z": 5.0}
    assert states(db)["1a"][0] == "synced"


def test_inventory_changes_and_requeue(db):
    store = EpnStore(db)
    found = [{"epn": "1a", "beamline": "MX", "source_path": "/d/MX/1a", "size_bytes": 10, "file_count": 1,
              "newest_mtime": 100.0}]
    assert store.inventory_changes(found, store.rows(["1a"])) == (["1a"], [], [], [])
    store.record_inventory(found, ["1a"], [], [], 1.0)
    assert store.inventory_changes(found, store.rows(["1a"])) == ([], [], ["1a"], [])
    db.execute("UPDATE epns SET state = 'synced'")
    grown = [dict(found[0], size_bytes=20, file_count=2, newest_mtime=200.0)]
    added, updated, unchanged, requeued = store.inventory_changes(grown, store.rows(["1a"]))
    assert (added, updated, unchanged, requeued) == ([], ["1a"], [], ["1a"])
    store.record_inventory(grown, added, updated, requeued, 2.0)
    row = db.query_one("SELECT * FROM epns")
    assert (row["state"], row["size_bytes"], row["newest_mtime"]) == ("pending", 20, 200.0)


def test_ssh_problems_and_signals():
    assert "does not match" in ssh_problem(HOST_KEY_CHANGED, "h", 22, "u", "/k")
    assert "could not be verified" in ssh_problem("Host key verification failed.\n", "h", 22, "u", None)
    assert "authentication" in ssh_problem("u@h: Permission denied (publickey).\n", "h", 22, "u", None)
    assert ssh_problem("rsync: connection unexpectedly closed\n", "h", 22, "u", None) is None


# -- the run --------------------------------------------------------------------------------------

def test_retries_within_the_run_then_success(db, tmp_path):
    script = Script({"1a": [(12, "", "connection unexpectedly closed"), (255, "", "Connection refused"),
                            (0, STATS, "")]})
    result = run(db, script, tmp_path, epns=["1a"])
    assert result["synced"] == ["1a"] and result["epns"][0]["attempts"] == 3
    assert [r["rc"] for r in db.query("SELECT rc FROM rsync_attempts ORDER BY id")] == [12, 255, 0]
    assert states(db) == {"1a": ("synced", 0, None)}


def test_retryable_error_left_for_a_later_run_with_backoff(db, tmp_path):
    script = Script({"1a": [(30, "", "timeout")]})
    result = run(db, script, tmp_path, epns=["1a"], run_retries=0, retry_delay=600)
    assert result["retrying"] == ["1a"] and result["epns"][0]["status"] == "retry"
    row = db.query_one("SELECT * FROM epns")
    assert row["state"] == "retry" and row["next_attempt_at"] > time.time() + 500
    result = run(db, script, tmp_path, epns=["1a"], run_retries=0)
    assert result["epns"] == [] and "waiting until" in result["skipped_epns"][0]["reason"]
    db.execute("UPDATE epns SET next_attempt_at = 0")
    for _attempt in range(3):
        run(db, script, tmp_path, epns=["1a"], run_retries=0, retry_delay=0)
    with pytest.raises(RsyncError) as raised:  # the fifth attempt across runs gives up
        run(db, script, tmp_path, epns=["1a"], run_retries=0, retry_delay=0)
    assert raised.value.details["failed_epns"] == ["1a"]
    assert states(db)["1a"][0] == "failed"
    assert len(script.calls) == 5


def test_fatal_codes_fail_at_once_and_stop_stops(db, tmp_path):
    script = Script({"1a": [(3, "", "change_dir failed")], "2a": [(20, "", "received SIGTERM")]})
    with pytest.raises(RsyncError) as raised:
        run(db, script, tmp_path, epns=["1a", "2a", "3a"])
    details = raised.value.details
    assert details["stopped"] is True and details["failed_epns"] == ["1a"]
    assert "told to stop" in raised.value.msg
    assert [call[0] for call in script.calls] == ["1a", "2a"]  # 3a was never started
    assert {e: s[0] for e, s in states(db).items()} == {"1a": "failed", "2a": "pending", "3a": "pending"}
    assert all(claim is None for _s, _a, claim in states(db).values())


def test_host_key_refusal_stops_the_run_without_blaming_the_epn(db, tmp_path):
    script = Script({"1a": [(255, "", HOST_KEY_CHANGED)]})
    with pytest.raises(RsyncError, match="does not match"):
        run(db, script, tmp_path, epns=["1a", "2a"])
    assert len(script.calls) == 1
    assert states(db)["1a"] == ("pending", 0, None)


def test_check_mode_writes_nothing_and_reports_changes(db, tmp_path):
    script = Script({})
    result = run(db, script, tmp_path, check_mode=True, epns=["1a", "2a", "../x", "9z"])
    assert result["changed"] and result["synced"] == ["1a", "2a"]
    assert result["epns"][0]["changes"] == [{"flags": ">f+++++++++", "path": "file"}]
    assert all("--dry-run" in argv and "--itemize-changes" in argv for _e, argv in script.calls)
    assert result["unmapped"] == ["9z"] and result["rejected"][0]["epn"] == "../x"
    assert db.query("SELECT * FROM epns") == [] and not (tmp_path / "dest").exists()


def test_diff_mode_lists_the_itemized_changes(db, tmp_path):
    result = run(db, Script({}), tmp_path, check_mode=True, diff_mode=True, epns=["1a", "2a"])
    assert result["diff"] == {"prepared": "1a: >f+++++++++ file\n2a: >f+++++++++ file\n"}
    result = run(db, Script({}), tmp_path, epns=["1a"])
    assert "diff" not in result and "changes" not in result["epns"][0] and result["epns"][0]["changes_total"] == 1


def test_workers_run_in_parallel_and_the_database_stays_on_one_thread(db, tmp_path):
    script = Script({}, delay=0.3)
    started = time.monotonic()
    result = run(db, script, tmp_path, epns=["1a", "2a", "3a", "4a"], workers=4)
    assert time.monotonic() - started < 1.0 and script.most_at_once == 4
    assert result["synced"] == ["1a", "2a", "3a", "4a"]  # in plan order, whatever finished first
    assert {s for s, _a, _c in states(db).values()} == {"synced"}


def test_from_db_order_and_limit(db, tmp_path):
    store = EpnStore(db)
    found = [{"epn": epn, "beamline": "MX", "source_path": "/data/MX/" + epn, "size_bytes": 1, "file_count": 1,
              "newest_mtime": mtime} for epn, mtime in (("1a", 300.0), ("2a", 100.0), ("3a", 200.0))]
    store.record_inventory(found, ["1a", "2a", "3a"], [], [], 1.0)
    script = Script({})
    assert run(db, script, tmp_path, from_db=True, order="DESC", limit=2)["synced"] == ["1a", "3a"]
    assert run(db, script, tmp_path, from_db=True, order="DESC", limit=2)["synced"] == ["2a"]
    assert run(db, script, tmp_path, from_db=True)["synced"] == []


def test_claimed_elsewhere_is_skipped(db, tmp_path):
    store = EpnStore(db)
    store.record_candidates([{"epn": "1a", "project": "p1", "source_path": "/s/"}], time.time())
    store.claim("1a", "other-host/1/abc", 300, time.time(), ["pending"])
    result = run(db, Script({}), tmp_path, epns=["1a", "2a"])
    assert result["synced"] == ["2a"]
    assert result["skipped_epns"][0]["epn"] == "1a" and "claimed by other-host/1/abc" in result["skipped_epns"][0]["reason"]


@pytest.mark.parametrize("overrides", [
    {"epns": ["1a"], "from_db": True},
    {},
    {"epns": ["1a"], "workers": 0},
    {"epns": ["1a"], "claim_ttl": 1},
    {"epns": ["1a"], "exit_policy": {"23": "sometimes"}},
    {"epns": ["1a"], "extra_args": ["--rsh=sh"]},
    {"epns": ["1a"], "key_file": "relative/key"},
])
def test_configuration_errors(db, tmp_path, overrides):
    with pytest.raises(ConfigError):
        run(db, Script({}), tmp_path, **overrides)


def test_old_rsync_is_warned_about(db, tmp_path):
    def runner(argv):
        if argv[-1] == "--version":
            return 0, "rsync  version 3.2.7  protocol version 31\n", ""
        return 0, STATS, ""

    warnings = []
    result = run(db, runner, tmp_path, epns=["1a"], warnings=warnings)
    assert result["rsync_version"] == "3.2.7" and any("older than 3.4.0" in w for w in warnings)


def test_a_long_transfer_keeps_its_lease(db, state_db_url, tmp_path):
    seen = []

    def runner(argv):
        if argv[-1] == "--version":
            return 0, VERSION, ""
        time.sleep(3.5)  # longer than claim_ttl: only the renewals keep the claim alive
        other = open_state(state_db_url)  # another connection, as another host would see it
        try:
            seen.append(other.query_one("SELECT claimed_by, claim_expires_at FROM epns"))
        finally:
            other.close()
        return 0, STATS, ""

    result = run(db, runner, tmp_path, epns=["1a"], claim_ttl=2)
    assert result["synced"] == ["1a"]
    assert seen[0]["claimed_by"] and seen[0]["claim_expires_at"] > time.time()
    assert states(db)["1a"] == ("synced", 0, None)
