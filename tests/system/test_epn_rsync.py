# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""epn_rsync through real ansible-playbook runs: the harness's OpenSSH sshd and rsync, the portal
test server, SQLite and PostgreSQL. Assertions are on files, database rows and processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._epnsync import EpnStore
from ansible_collections.scidata.replication.plugins.module_utils._state import StateDB
from ansible_collections.scidata.replication.tests.portal.epn_site import (
    PORTAL_SECRETS,
    descendants,
    kill,
    make_epn,
    migrate,
    module_processes,
    portal_args,
    portal_config,
    query,
    restart_sshd,
    rsync_view,
    ssh_args,
    stop_sshd_and_sessions,
    top_rsyncs,
    tree,
    visit,
    wait_for,
    when,
)
from ansible_collections.scidata.replication.tests.portal.portal_server import PortalServer

MODULE = "scidata.replication.epn_rsync"
CAP_MAP = {"10001": "projA", "10002": "projB", "10003": "projC", "10004": "projD", "10005": "projE",
           "10006": "projF", "30001": "projH", "40001": "projF", "40002": "projF", "40003": "projF",
           "40004": "projF", "50001": "projQ", "50002": "projQ", "50003": "projQ", "50004": "projQ",
           "50005": "projQ", "50006": "projQ", "50007": "projQ", "50008": "projQ"}

HOSTILE_FILES = {
    "a b.dat": b"space\n",
    "new\nline.dat": b"newline\n",
    "-e sh": b"leading dash\n",
    "$(touch pwned)": b"command substitution\n",
    "`touch pwned2`;x": b"backticks\n",
    "\u00fcn\u00efc\u00f6d\u00e9 \u2713.dat": "unicode \u2713\n".encode("utf-8"),
    "--rsh=sh -c x/inner": b"option-looking folder\n",
    "quote'\" & ;|<>*?[x].txt": b"shell metacharacters\n",
    "sub dir/deeper/image_0001.cbf": os.urandom(70000),
    ".info": b"kept: rsync includes .info\n",
    ".hidden": b"skipped: dotfiles are excluded\n",
}


def data_files(seed):
    return {"image_0001.cbf": os.urandom(50000), "image_0002.cbf": os.urandom(30000),
            "processed/summary %s.txt" % seed: ("summary of %s\n" % seed).encode(),
            ".info": b"info\n", ".DS_Store": b"junk\n"}


def base_args(sshd_info, tmp_path, state_db, **extra):
    args = ssh_args(sshd_info)
    args.update(src_prefix=str(tmp_path / "src"), beamline="MX", epn_cap_map=CAP_MAP, dest_root=str(tmp_path / "dest"),
                state_db=state_db, lock_file=str(tmp_path / "run.lock"), retry_delay=1)
    args.update(extra)
    return args


def count(url, sql, params=()):
    return list(query(url, sql, params)[0].values())[0]


def big_file(path, size):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), "wb") as handle:
        handle.write(os.urandom(size))


def transfer_started(dest_dir):
    """rsync is writing: a temporary or partial file with data exists under ``dest_dir``."""
    for directory, _dirs, files in os.walk(str(dest_dir)):
        for name in files:
            path = os.path.join(directory, name)
            if (name.startswith(".") or ".rsync-partial" in path) and os.path.getsize(path) > 0:
                return True
    return False


# -- the portal-driven run -------------------------------------------------------------------

@pytest.fixture
def portal():
    visits_101 = [
        visit("10001a", when(days=-4), when(days=-3)),
        visit("10003a", when(hours=-1), when(days=1)),  # still running: never synced
        visit("10004a", when(hours=-3), when(minutes=-30)),  # ended after the running visit started
        visit("10005a", when(days=-45), when(days=-44)),  # older than visit_day_range
        visit("20001a", when(days=-3), when(days=-2)),  # no project in epn_cap_map
        visit("10006a", when(days=-6), when(days=-5)),  # synced by mxsync (ignore.yml)
    ]
    visits_102 = [visit("10002a", when(days=-3), when(days=-2), pi=("Rosalind", "Franklin", "rf@example.org"))]
    with PortalServer(portal_config(visits_101, visits_102)) as server:
        yield server


def test_portal_driven_run_check_apply_idempotent(ansible, sshd, portal, state_db_url, tmp_path):
    if state_db_url.startswith("postgresql"):
        migrate(state_db_url)  # check mode never migrates
    for epn in ("10001a", "10002a", "10003a", "10004a", "10005a", "10006a", "20001a"):
        make_epn(tmp_path / "src" / "MX", epn, data_files(epn))
    ignore = tmp_path / "ignore.yml"
    ignore.write_text("previouslySynched:\n- 10006a\n- '../etc'\n")
    log_file = tmp_path / "log" / "epn_rsync.jsonl"
    args = base_args(sshd.info, tmp_path, state_db_url, from_portal=True, import_ignore_file=str(ignore), workers=2,
                     log_file=str(log_file), **portal_args(portal))
    dest = tmp_path / "dest"

    # 1. check mode: the dry run says what would change, nothing is written anywhere
    result, _out = ansible.run(MODULE, args, check=True)
    assert result["changed"] is True and not result.get("failed"), result
    assert sorted(result["synced"]) == ["10001a", "10002a"]
    changes = {e["epn"]: sorted(c["path"] for c in e["changes"]) for e in result["epns"]}
    assert "image_0001.cbf" in changes["10001a"] and ".info" in changes["10002a"]
    assert not any(".DS_Store" in path for paths in changes.values() for path in paths)
    assert not dest.exists()
    if state_db_url.startswith("postgresql"):
        assert count(state_db_url, "SELECT count(*) FROM epns") == 0
        assert count(state_db_url, "SELECT count(*) FROM rsync_attempts") == 0
    else:
        assert not os.path.exists(state_db_url)

    # 2. apply
    result, _out = ansible.run(MODULE, args)
    assert result["changed"] is True and not result.get("failed"), result
    assert sorted(result["synced"]) == ["10001a", "10002a"]
    assert result["unmapped"] == ["20001a"]
    assert result["imported"] == ["10006a"]
    assert {"epn": "10006a", "reason": "already synced (imported from import_ignore_file)"} in result["skipped_epns"]
    assert {"epn": "10003a", "reason": "EPN has a visit still running"} in result["held_back"]
    assert result["rejected"][0]["epn"] == "../etc"
    for epn, project in (("10001a", "projA"), ("10002a", "projB")):
        copied = tree(dest / project / epn / "data")
        assert copied == rsync_view(tmp_path / "src" / "MX" / epn)
        assert ".info" in copied and ".DS_Store" not in copied
    assert sorted(os.listdir(str(dest))) == ["projA", "projB"]
    rows = {r["epn"]: r for r in query(state_db_url, "SELECT * FROM epns")}
    assert {e: rows[e]["state"] for e in rows} == {"10001a": "synced", "10002a": "synced", "10006a": "synced"}
    assert rows["10002a"]["project"] == "projB" and json.loads(rows["10002a"]["principal_scientist"])["last_name"] == "Franklin"
    assert rows["10001a"]["claimed_by"] is None and rows["10001a"]["attempts"] == 0
    attempts = query(state_db_url, "SELECT * FROM rsync_attempts ORDER BY epn")
    assert [(a["epn"], a["rc"], a["files"]) for a in attempts] == [("10001a", 0, 4), ("10002a", 0, 4)]
    assert all(a["ended_at"] >= a["started_at"] and a["bytes"] > 80000 for a in attempts)
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert {(e["event"], e["epn"]) for e in events if e.get("event") in ("start", "finish")} == {
        ("start", "10001a"), ("finish", "10001a"), ("start", "10002a"), ("finish", "10002a")}

    # 3. again, at -vvv: nothing to do, and no secret in the output or the log
    result, output = ansible.run(MODULE, args, verbosity=3)
    assert result["changed"] is False and not result.get("failed"), result
    assert result["synced"] == [] and result["imported"] == []
    assert {s["epn"] for s in result["skipped_epns"]} == {"10001a", "10002a", "10006a"}
    assert count(state_db_url, "SELECT count(*) FROM rsync_attempts") == 2
    secrets = list(PORTAL_SECRETS.values()) + portal.state.issued_tokens()
    assert len(secrets) >= 6
    log_text = log_file.read_text()
    for secret in secrets:
        assert secret not in output and secret not in log_text


# -- names --------------------------------------------------------------------------------------

def test_hostile_names_are_copied_verbatim_and_bad_epns_rejected(ansible, sshd, tmp_path):
    source = make_epn(tmp_path / "src" / "MX", "30001a", HOSTILE_FILES)
    make_epn(tmp_path / "src" / "MX", "-e sh", {"bait": b"must not be copied\n"})
    make_epn(tmp_path / "src", "x", {"bait": b"must not be copied\n"})
    home_before = set(os.listdir(os.path.expanduser("~")))
    args = base_args(sshd.info, tmp_path, str(tmp_path / "state.db"), epns=["30001a", "../x", "-e sh", "30001a"])
    result, _out = ansible.run(MODULE, args)
    assert not result.get("failed"), result
    assert result["synced"] == ["30001a"]
    assert {r["epn"]: r["reason"] for r in result["rejected"]} == {
        "../x": "EPN is '.' or contains '..'", "-e sh": "EPN starts with '-'"}
    copied = tree(tmp_path / "dest" / "projH" / "30001a" / "data")
    assert copied == rsync_view(source)
    assert "new\nline.dat" in copied and "$(touch pwned)" in copied and "\u00fcn\u00efc\u00f6d\u00e9 \u2713.dat" in copied
    assert ".hidden" not in copied and ".info" in copied
    assert os.listdir(str(tmp_path / "dest")) == ["projH"]
    for directory, _dirs, files in os.walk(str(tmp_path)):
        assert "pwned" not in files and "pwned2" not in files and "bait" not in files or "src" in directory
    assert set(os.listdir(os.path.expanduser("~"))) - home_before <= {".ansible"}
    assert [r["epn"] for r in query(str(tmp_path / "state.db"), "SELECT epn FROM epns")] == ["30001a"]


# -- faults -------------------------------------------------------------------------------------

@pytest.fixture
def private_sshd(tmp_path):
    import services  # tests/harness

    workdir = tmp_path / "private-sshd"
    workdir.mkdir()
    server = services.SshServer(str(workdir)).start()
    yield server
    if os.path.exists(server.pid_file):
        stop_sshd_and_sessions(server)


def test_sshd_stopped_mid_run_is_retried_and_resumed(ansible, private_sshd, tmp_path):
    size = 3 * 1024 * 1024
    big_file(tmp_path / "src" / "MX" / "40001a" / "big.h5", size)
    state_db = str(tmp_path / "state.db")
    args = base_args(private_sshd.info, tmp_path, state_db, epns=["40001a"], bwlimit="600", run_retries=5,
                     retry_delay=1, retry_max_delay=4)
    process, result_file = ansible.playbook(MODULE, args)
    data = tmp_path / "dest" / "projF" / "40001a" / "data"
    wait_for(lambda: transfer_started(data), timeout=60, what="the transfer to start")
    time.sleep(0.5)
    stop_sshd_and_sessions(private_sshd)
    time.sleep(2.5)
    restart_sshd(private_sshd)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    with open(result_file) as handle:
        result = json.load(handle)
    assert not result.get("failed"), result
    assert result["synced"] == ["40001a"]
    attempts = query(state_db, "SELECT rc, bytes FROM rsync_attempts ORDER BY id")
    assert len(attempts) >= 2 and attempts[0]["rc"] in (12, 255, 10, 30) and attempts[-1]["rc"] == 0
    entry = result["epns"][0]
    assert entry["attempts"] == len(attempts) and entry["stats"]["matched_data"] > 0  # resumed from the partial file
    assert tree(data) == rsync_view(tmp_path / "src" / "MX" / "40001a")
    assert not os.path.exists(str(data / ".rsync-partial"))
    row = query(state_db, "SELECT state, attempts, claimed_by FROM epns")[0]
    assert row == {"state": "synced", "attempts": 0, "claimed_by": None}


def test_rsync_killed_mid_file_stops_then_resumes(ansible, sshd, tmp_path):
    size = 3 * 1024 * 1024
    big_file(tmp_path / "src" / "MX" / "40002a" / "big.h5", size)
    state_db = str(tmp_path / "state.db")
    args = base_args(sshd.info, tmp_path, state_db, epns=["40002a"], bwlimit="800")
    process, result_file = ansible.playbook(MODULE, args)
    data = tmp_path / "dest" / "projF" / "40002a" / "data"
    wait_for(lambda: transfer_started(data), timeout=60, what="the transfer to start")
    modules = wait_for(lambda: module_processes(process.pid, "epn_rsync"), what="the module process")
    rsyncs = wait_for(lambda: top_rsyncs(modules, str(data)), what="the rsync process")
    time.sleep(0.5)
    kill(rsyncs, signal.SIGTERM)  # what `kill` or a system shutdown does
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    with open(result_file) as handle:
        result = json.load(handle)
    assert result.get("failed") and result["stopped"] is True and "told to stop" in result["msg"], result
    assert result["epns"][0]["rc"] == 20
    partial = data / ".rsync-partial" / "big.h5"
    assert partial.exists() and 0 < partial.stat().st_size < size
    assert query(state_db, "SELECT state, attempts, claimed_by FROM epns")[0] == {
        "state": "pending", "attempts": 0, "claimed_by": None}  # a stop is not the EPN's attempt

    args.pop("bwlimit")
    result, _out = ansible.run(MODULE, args)
    assert not result.get("failed") and result["synced"] == ["40002a"], result
    stats = result["epns"][0]["stats"]
    assert stats["matched_data"] > 0 and stats["literal_data"] < size  # resumed, not started over
    assert tree(data) == rsync_view(tmp_path / "src" / "MX" / "40002a")
    assert [a["rc"] for a in query(state_db, "SELECT rc FROM rsync_attempts ORDER BY id")] == [20, 0]


def test_changed_host_key_is_refused(ansible, sshd, tmp_path):
    make_epn(tmp_path / "src" / "MX", "40001a", {"f": b"data\n"})
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("[127.0.0.1]:%d %s\n" % (sshd.info["port"], " ".join(
        (tmp_path / "other_key.pub").read_text().split()[:2])))
    before = known_hosts.read_text()
    state_db = str(tmp_path / "state.db")
    args = base_args(sshd.info, tmp_path, state_db, epns=["40001a"], known_hosts_file=str(known_hosts))
    result, _out = ansible.run(MODULE, args)
    assert result.get("failed"), result
    assert "does not match" in result["msg"] and "refusing to connect" in result["msg"]
    assert result["epns"][0]["status"] == "interrupted"
    assert known_hosts.read_text() == before  # never "learns" the new key
    assert not os.path.exists(str(tmp_path / "dest" / "projF" / "40001a" / "data"))
    row = query(state_db, "SELECT state, attempts, claimed_by, last_rc FROM epns")[0]
    assert row == {"state": "pending", "attempts": 0, "claimed_by": None, "last_rc": 255}


def test_exit_codes_23_and_24_follow_the_policy(ansible, sshd, tmp_path):
    src = tmp_path / "src" / "MX"
    make_epn(src, "40003a", {"clash": b"a file where the destination has a folder\n", "ok": b"ok\n"})
    make_epn(tmp_path / "dest" / "projF" / "40003a" / "data", "clash", {"keep": b"not to be deleted\n"})
    make_epn(src, "40004a", {"zz_vanishing": b"gone soon\n"})
    big_file(src / "40004a" / "aa_big", 1500 * 1024)
    wrapper = tmp_path / "rsync-vanish.sh"
    wrapper.write_text("#!/bin/sh\n( sleep 1; rm -f '%s' ) &\nexec rsync \"$@\"\n" % (src / "40004a" / "zz_vanishing"))
    wrapper.chmod(0o755)
    state_db = str(tmp_path / "state.db")
    args = base_args(sshd.info, tmp_path, state_db, epns=["40003a", "40004a"], workers=2, retry_delay=0,
                     bwlimit="1000", extra_args=["--rsync-path=%s" % wrapper])
    result, _out = ansible.run(MODULE, args)
    assert result.get("failed") and "40003a (rc 23" in result["msg"], result
    by_epn = {e["epn"]: e for e in result["epns"]}
    assert by_epn["40003a"]["status"] == "failed" and by_epn["40003a"]["attempts"] == 2  # retried once, then reported
    assert "could not make way" in by_epn["40003a"]["stderr_tail"]
    assert by_epn["40004a"]["status"] == "warning" and by_epn["40004a"]["rc"] == 24
    assert "vanished" in by_epn["40004a"]["warning"]
    assert result["synced"] == ["40004a"] and result["failed_epns"] == ["40003a"]
    assert {r["epn"]: r["state"] for r in query(state_db, "SELECT epn, state FROM epns")} == {
        "40003a": "failed", "40004a": "synced"}
    assert [(a["epn"], a["rc"]) for a in query(state_db, "SELECT epn, rc FROM rsync_attempts ORDER BY epn, id")] == [
        ("40003a", 23), ("40003a", 23), ("40004a", 24)]
    assert (tmp_path / "dest" / "projF" / "40004a" / "data" / "aa_big").stat().st_size == 1500 * 1024
    assert (tmp_path / "dest" / "projF" / "40003a" / "data" / "clash" / "keep").exists()

    # A failed EPN waits for retry_failed; a policy override makes 23 a warning.
    args.update(retry_failed=True, exit_policy={"23": "warn"}, epns=["40003a"])
    args.pop("bwlimit")
    result, _out = ansible.run(MODULE, args)
    assert not result.get("failed") and result["synced"] == ["40003a"], result
    assert result["epns"][0]["status"] == "warning"
    assert query(state_db, "SELECT state FROM epns WHERE epn = ?", ("40003a",))[0]["state"] == "synced"
    assert (tmp_path / "dest" / "projF" / "40003a" / "data" / "ok").read_bytes() == b"ok\n"


# -- several transfer hosts, one PostgreSQL queue --------------------------------------------------

def fill_queue(url, src, epns, size):
    migrate(url)
    db = StateDB(url)
    try:
        store = EpnStore(db)
        found = []
        for index, epn in enumerate(epns):
            big_file(src / epn / "data.h5", size)
            found.append({"epn": epn, "beamline": "MX", "source_path": str(src / epn), "size_bytes": size,
                          "file_count": 1, "newest_mtime": 1000.0 + index})
        store.record_inventory(found, [f["epn"] for f in found], [], [], time.time())
    finally:
        db.close()


def test_two_runs_share_the_postgresql_queue_exactly_once(ansible, sshd, postgres, tmp_path):
    url = postgres.create_database("q_two_runs")
    epns = ["5000%da" % n for n in range(1, 9)]
    fill_queue(url, tmp_path / "src" / "MX", epns, 256 * 1024)
    runs = []
    for host in ("xfer1", "xfer2"):
        args = base_args(sshd.info, tmp_path, url, from_db=True, workers=2, bwlimit="256",
                         dest_root=str(tmp_path / host), lock_file=str(tmp_path / (host + ".lock")))
        runs.append(ansible.playbook(MODULE, args, name=host))
    results = []
    for process, result_file in runs:
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, output
        with open(result_file) as handle:
            results.append(json.load(handle))
    assert not any(r.get("failed") for r in results), results
    first, second = (set(r["synced"]) for r in results)
    assert first and second, results  # both hosts took part
    assert not first & second and first | second == set(epns)
    for epn in epns:
        copies = [host for host in ("xfer1", "xfer2")
                  if os.path.exists(str(tmp_path / host / "projQ" / epn / "data" / "data.h5"))]
        assert copies == (["xfer1"] if epn in first else ["xfer2"])
    assert count(url, "SELECT count(*) FROM rsync_attempts") == len(epns)
    assert count(url, "SELECT count(DISTINCT epn) FROM rsync_attempts WHERE rc = 0") == len(epns)
    assert count(url, "SELECT count(*) FROM epns WHERE state = 'synced' AND claimed_by IS NULL") == len(epns)


def test_killed_run_does_not_hold_its_claims_forever(ansible, sshd, postgres, tmp_path):
    url = postgres.create_database("q_killed_run")
    epns = ["50001a", "50002a"]
    fill_queue(url, tmp_path / "src" / "MX", epns, 2 * 1024 * 1024)
    ttl = 30  # the next run must start well within it, even on a loaded machine
    args = base_args(sshd.info, tmp_path, url, from_db=True, workers=2, bwlimit="300", claim_ttl=ttl)
    process, _result_file = ansible.playbook(MODULE, args, name="doomed")
    wait_for(lambda: count(url, "SELECT count(*) FROM epns WHERE claimed_by IS NOT NULL") == 2,
             what="both EPNs to be claimed")
    modules = wait_for(lambda: module_processes(process.pid, "epn_rsync"), what="the module process")
    wait_for(lambda: top_rsyncs(modules, str(tmp_path / "dest")), what="rsync to run")
    victims = modules + descendants(modules[0])
    kill(victims)  # the host dies: no cleanup, the claims stay in the database
    process.communicate(timeout=60)
    claims = query(url, "SELECT claimed_by, claim_expires_at FROM epns")
    assert all(c["claimed_by"] for c in claims)

    args.pop("bwlimit")
    args["lock_file"] = str(tmp_path / "other-host.lock")
    result, _out = ansible.run(MODULE, args)
    assert not result.get("failed") and result["synced"] == [], result
    assert {s["epn"] for s in result["skipped_epns"]} == set(epns)
    assert all("claimed by" in s["reason"] for s in result["skipped_epns"])

    expiry = max(c["claim_expires_at"] for c in claims)
    time.sleep(max(0.0, expiry - time.time() + 0.5))
    result, _out = ansible.run(MODULE, args)
    assert not result.get("failed") and sorted(result["synced"]) == epns, result
    for epn in epns:
        assert tree(tmp_path / "dest" / "projQ" / epn / "data").get("data.h5") == \
            rsync_view(tmp_path / "src" / "MX" / epn)["data.h5"]
    rows = query(url, "SELECT epn, rc, ended_at FROM rsync_attempts ORDER BY id")
    assert [(r["epn"] in epns, r["rc"]) for r in rows[:2]] == [(True, None), (True, None)]  # the dead run's attempts
    assert sorted((r["epn"], r["rc"]) for r in rows[2:]) == [(e, 0) for e in epns]
    assert count(url, "SELECT count(*) FROM epns WHERE state = 'synced' AND claimed_by IS NULL") == 2
