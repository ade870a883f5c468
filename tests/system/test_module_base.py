# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The module base through real ansible-playbook runs: run lock, missing library, secrets, log."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import subprocess
import threading
import time

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._state import LATEST_VERSION, StateDB

MODULE = "scidata.replication.state_schema"


def schema_version(url):
    db = StateDB(url)
    try:
        return db.schema_version()
    finally:
        db.close()


def test_check_then_apply_then_idempotent(ansible, tmp_path):
    path = str(tmp_path / "db" / "state.db")
    result, _out = ansible.run(MODULE, {"state_db": path}, check=True)
    assert result["changed"] and result["applied"][0]["version"] == 1
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    result, _out = ansible.run(MODULE, {"state_db": path})
    assert result["changed"] and result["schema_version"] == LATEST_VERSION
    assert schema_version(path) == LATEST_VERSION
    result, _out = ansible.run(MODULE, {"state_db": path})
    assert not result["changed"] and result["applied"] == []


def test_held_lock_means_nothing_is_done(ansible, tmp_path):
    path, lock = str(tmp_path / "state.db"), str(tmp_path / "job.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        result, _out = ansible.run(MODULE, {"state_db": path, "lock_file": lock})
    assert result["locked"] is True and result["changed"] is False and not result.get("failed")
    assert not os.path.exists(path)


def test_second_run_waits_for_the_lock_up_to_lock_timeout(ansible, tmp_path):
    path, lock = str(tmp_path / "state.db"), str(tmp_path / "job.lock")
    handle = open(lock, "a")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    releaser = threading.Timer(3.0, handle.close)
    releaser.start()
    started = time.monotonic()
    result, _out = ansible.run(MODULE, {"state_db": path, "lock_file": lock, "lock_timeout": 60})
    releaser.join()
    assert result["changed"] and "locked" not in result
    assert time.monotonic() - started >= 3.0
    assert schema_version(path) == LATEST_VERSION


def test_two_overlapping_playbooks_one_does_the_work(ansible, tmp_path, state_db_url):
    lock = str(tmp_path / "job.lock")
    runs = [ansible.playbook(MODULE, {"state_db": state_db_url, "lock_file": lock}, name="run%d" % n)
            for n in range(2)]
    results = []
    for process, result_file in runs:
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, output
        results.append(json.load(open(result_file)))
    assert [r.get("failed", False) for r in results] == [False, False]
    assert sum(1 for r in results if r["changed"]) == 1
    assert schema_version(state_db_url) == LATEST_VERSION


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory):
    """A Python 3.9 without psycopg2: what a transfer host may have."""
    candidates = sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3")) or ["/usr/bin/python3"]
    venv = str(tmp_path_factory.mktemp("bare") / "venv")
    subprocess.run([candidates[0], "-m", "venv", "--without-pip", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    probe = subprocess.run([python, "-c", "import psycopg2"], capture_output=True, check=False)
    assert probe.returncode != 0
    return python


def test_missing_psycopg2_is_reported_clearly(ansible, bare_python):
    result, _out = ansible.run(MODULE, {"state_db": "postgresql://nobody@127.0.0.1:1/x"}, interpreter=bare_python)
    assert result["failed"]
    assert "psycopg2" in result["msg"] and "pip install psycopg2-binary" in result["msg"]
    assert "Traceback" not in result["msg"]


def test_bare_python_runs_the_sqlite_default(ansible, bare_python, tmp_path):
    path = str(tmp_path / "state.db")
    result, _out = ansible.run(MODULE, {"state_db": path}, interpreter=bare_python)
    assert result["changed"] and schema_version(path) == LATEST_VERSION


def test_password_never_shown_and_log_masks_it(ansible, postgres, tmp_path):
    url = postgres.create_database("logged", owner=postgres.PASSWORD_ROLE)
    log = str(tmp_path / "log" / "runs.jsonl")
    result, output = ansible.run(MODULE, {"state_db": url, "log_file": log},
                                 extra_env={"SCIDATA_STATE_DB_PASSWORD": postgres.PASSWORD}, verbosity=3)
    assert result["changed"] and schema_version_pg(postgres, url) == LATEST_VERSION
    assert postgres.PASSWORD not in output
    entries = [json.loads(line) for line in open(log)]
    assert entries[-1]["module"] == "state_schema" and entries[-1]["changed"] is True
    assert postgres.PASSWORD not in open(log).read()


def schema_version_pg(postgres, url):
    db = StateDB(url, password=postgres.PASSWORD)
    try:
        return db.schema_version()
    finally:
        db.close()


def test_wrong_password_fails_without_echoing_it(ansible, postgres):
    url = postgres.create_database("wrongpw", owner=postgres.PASSWORD_ROLE)
    result, output = ansible.run(MODULE, {"state_db": url, "state_db_password": "not-the-password-42"},
                                 verbosity=3)
    assert result["failed"] and "cannot connect" in result["msg"]
    assert "not-the-password-42" not in output
