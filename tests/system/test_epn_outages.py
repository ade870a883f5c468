# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""epn_rsync when the facility is down or processes are killed: real ansible-playbook runs, the
harness sshd and rsync, SQLite. Assertions are on database rows, files and live processes."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time

from ansible_collections.scidata.replication.tests.portal.epn_site import (
    cmdline,
    kill,
    make_epn,
    module_processes,
    query,
    rsync_view,
    ssh_args,
    top_rsyncs,
    tree,
    wait_for,
)

MODULE = "scidata.replication.epn_rsync"
CAP_MAP = {"41001": "projO", "41002": "projO"}


def base_args(info, tmp_path, **extra):
    args = ssh_args(info)
    args.update(src_prefix=str(tmp_path / "src"), beamline="MX", epn_cap_map=CAP_MAP, dest_root=str(tmp_path / "dest"),
                state_db=str(tmp_path / "state.db"), lock_file=str(tmp_path / "run.lock"), retry_delay=1)
    args.update(extra)
    return args


def big_file(path, size):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), "wb") as handle:
        handle.write(os.urandom(size))


def writing(data):
    """rsync is writing into ``data``: a temporary or partial file with data exists."""
    for directory, _dirs, files in os.walk(str(data)):
        for name in files:
            if name.startswith(".") and os.path.getsize(os.path.join(directory, name)) > 0:
                return True
    return False


def rsyncs_into(path):
    """Every live rsync process (any parent) pulling from the remote ``path``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = cmdline(int(entry))[:-1]  # the list ends with the empty string after the last NUL
            if len(argv) > 2 and os.path.basename(argv[0]) == b"rsync" and argv[-2].endswith(b":" + path.encode()):
                found.append(int(entry))
    return found


def temp_files(data):
    return glob.glob(os.path.join(str(data), ".*.??????"))


def test_unreachable_facility_stops_the_run_and_charges_no_epn(ansible, sshd, tmp_path):
    import services  # tests/harness

    for epn in ("41001a", "41002a"):
        make_epn(tmp_path / "src" / "MX", epn, {"f.cbf": b"f"})
    closed_port = services.free_port()  # nothing listens: "Connection refused"
    args = base_args(sshd.info, tmp_path, epns=["41001a", "41002a"], port=closed_port, run_retries=1,
                     max_attempts=2)
    for _run in range(3):
        result, _out = ansible.run(MODULE, args)
        assert result.get("failed") and "facility unreachable" in result["msg"], result
        assert "Connection refused" in result["msg"]
        assert result["failed_epns"] == [] and result["retrying"] == [], result
        assert result["interrupted"] == ["41001a", "41002a"], result
        assert [e["status"] for e in result["epns"]] == ["interrupted", "interrupted"]
        rows = query(args["state_db"], "SELECT epn, state, attempts, claimed_by FROM epns ORDER BY epn")
        assert rows == [{"epn": "41001a", "state": "pending", "attempts": 0, "claimed_by": None},
                        {"epn": "41002a", "state": "pending", "attempts": 0, "claimed_by": None}]
    assert not os.path.exists(str(tmp_path / "dest" / "projO" / "41002a" / "data"))

    args["port"] = sshd.info["port"]
    result, _out = ansible.run(MODULE, args)
    assert not result.get("failed") and result["synced"] == ["41001a", "41002a"], result


def test_rsync_killed_by_a_signal_is_retried_and_its_temp_files_removed(ansible, sshd, tmp_path):
    size = 3 * 1024 * 1024
    big_file(tmp_path / "src" / "MX" / "41001a" / "big.h5", size)
    args = base_args(sshd.info, tmp_path, epns=["41001a"], bwlimit="600", run_retries=0, max_attempts=3)
    data = tmp_path / "dest" / "projO" / "41001a" / "data"
    process, result_file = ansible.playbook(MODULE, args)
    wait_for(lambda: writing(data), timeout=60, what="the transfer to start")
    modules = wait_for(lambda: module_processes(process.pid, "epn_rsync"), what="the module process")
    rsyncs = wait_for(lambda: top_rsyncs(modules, str(data)), what="the rsync process")
    kill(rsyncs, signal.SIGKILL)  # what the OOM killer does
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    with open(result_file) as handle:
        result = json.load(handle)
    assert not result.get("failed") and result["retrying"] == ["41001a"], result
    entry = result["epns"][0]
    assert entry["rc"] == -9 and entry["meaning"] == "rsync was killed by SIGKILL" and entry["status"] == "retry"
    assert query(args["state_db"], "SELECT state, attempts FROM epns") == [{"state": "retry", "attempts": 1}]
    assert result["all_waiting"] is True and "waits for a retry" in result["msg"]

    # A temporary file of an earlier killed rsync, as rsync names them, is removed before the next one.
    (data / ".big.h5.Zz9Yy8").write_bytes(b"half a file")
    time.sleep(1.5)  # next_attempt_at: retry_delay
    args.pop("bwlimit")
    result, _out = ansible.run(MODULE, args)
    assert not result.get("failed") and result["synced"] == ["41001a"], result
    assert result["epns"][0]["stale_temp_files_removed"] >= 1
    assert temp_files(data) == []
    assert tree(data) == rsync_view(tmp_path / "src" / "MX" / "41001a")


def test_killed_module_takes_its_rsync_with_it(ansible, sshd, tmp_path):
    big_file(tmp_path / "src" / "MX" / "41001a" / "big.h5", 4 * 1024 * 1024)
    args = base_args(sshd.info, tmp_path, epns=["41001a"], bwlimit="100")  # about 40 s for the file
    data = tmp_path / "dest" / "projO" / "41001a" / "data"
    source = str(tmp_path / "src" / "MX" / "41001a") + "/"
    process, _result_file = ansible.playbook(MODULE, args)
    try:
        wait_for(lambda: writing(data), timeout=60, what="the transfer to start")
        modules = wait_for(lambda: module_processes(process.pid, "epn_rsync"), what="the module process")
        assert rsyncs_into(source)
        kill(modules)  # only the module: ansible-core runs it in its own session
        killed_at = time.monotonic()
        process.communicate(timeout=60)
        wait_for(lambda: not rsyncs_into(source), timeout=5, what="the killed run's rsync to die")
        assert time.monotonic() - killed_at < 10
        assert not os.path.exists(str(data / "big.h5"))  # it died mid-file, not at the end
    finally:
        kill(rsyncs_into(source))


def test_no_earlier_rsync_writes_into_an_epn_when_a_run_starts_it(ansible, sshd, tmp_path):
    big_file(tmp_path / "src" / "MX" / "41002a" / "big.h5", 3 * 1024 * 1024)
    args = base_args(sshd.info, tmp_path, epns=["41002a"])
    dest = str(tmp_path / "dest" / "projO" / "41002a" / "data") + "/"
    os.makedirs(dest)
    ssh = "ssh -p %d -i %s -o BatchMode=yes -o UserKnownHostsFile=%s" % (
        sshd.info["port"], sshd.info["key_file"], sshd.info["known_hosts"])
    # An rsync left by a run that died, still writing into the EPN's folder.
    orphan = subprocess.Popen(["rsync", "--recursive", "--bwlimit=200", "-e", ssh, "--",
                               "%s@%s:%s/" % (sshd.info["user"], sshd.info["host"], tmp_path / "src" / "MX" / "41002a"),
                               dest], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: writing(dest), timeout=60, what="the orphan to write")
        result, _out = ansible.run(MODULE, args)
        assert orphan.wait(timeout=30) == -signal.SIGKILL
        assert not result.get("failed") and result["synced"] == ["41002a"], result
        assert temp_files(dest) == []
        assert tree(dest) == rsync_view(tmp_path / "src" / "MX" / "41002a")
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_visit_folder_not_there_yet_is_looked_for_again_until_the_limit(ansible, sshd, tmp_path):
    args = base_args(sshd.info, tmp_path, epns=["41001a", "41002a"])  # missing_source_days: 7 by default
    make_epn(tmp_path / "src" / "MX", "41002a", {"f.cbf": b"f"})
    for _run in range(2):
        result, _out = ansible.run(MODULE, args)
        assert not result.get("failed"), result
        assert result["synced"] in (["41002a"], []) and result["retrying"] == ["41001a"], result
        entry = [e for e in result["epns"] if e["epn"] == "41001a"][0]
        assert entry["status"] == "retry" and "does not exist yet" in entry["meaning"] and entry["attempts"] == 1
        row = query(args["state_db"], "SELECT state, attempts FROM epns WHERE epn = '41001a'")[0]
        assert row == {"state": "retry", "attempts": 0}
    assert result["all_waiting"] is True  # the second run: 41002a is synced already

    # The folder appears: the next run syncs it.
    make_epn(tmp_path / "src" / "MX", "41001a", {"late.cbf": b"l" * 10})
    result, _out = ansible.run(MODULE, args)
    assert not result.get("failed") and result["synced"] == ["41001a"], result

    # An EPN whose folder never appears is failed once missing_source_days have passed.
    args.update(epns=["41003a"], epn_cap_map=dict(CAP_MAP, **{"41003": "projO"}), missing_source_days=0)
    result, _out = ansible.run(MODULE, args)
    assert result.get("failed") and result["failed_epns"] == ["41003a"], result
    assert "still missing 0 day(s)" in result["epns"][0]["meaning"]
    assert query(args["state_db"], "SELECT state FROM epns WHERE epn = '41003a'") == [{"state": "failed"}]
