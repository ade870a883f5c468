# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The job runner of cron and of runs by hand: the caller's environment never reaches the job, a run is
stopped after the job's timeout (as TimeoutStartSec= does under systemd), and a run skipped because the
previous one holds the lock says so. The runner is the one transfer_host renders; ansible-playbook in its
virtual environment is replaced by a stand-in that records its environment and sleeps."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from roles_support import LeanHosts

STAND_IN = """#!/bin/sh
env > {out}
sleep "$(cat {sleep})"
"""


@pytest.fixture(scope="module")
def runner(sshd):
    hosts = LeanHosts(sshd, ["h"])
    os.makedirs(hosts.path("h", "opt/venv/bin"))
    with open(hosts.path("h", "opt/venv/bin/ansible-playbook"), "w") as handle:
        handle.write(STAND_IN.format(out=hosts.path("h", "env.out"), sleep=hosts.path("h", "sleep")))
    os.chmod(hosts.path("h", "opt/venv/bin/ansible-playbook"), 0o755)
    play = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "scidata.replication.transfer_host"}]}]
    jobs = [{"name": "quick", "playbook": "globus_task_events", "scheduler": "cron", "timeout_start_sec": 3,
             "environment": {"GLOBUS_SDK_ENVIRONMENT": "test"}}]
    rc, output = hosts.run(play, "--tags", "transfer_host_configure,transfer_host_run", name="deploy", host_vars={
        "h": {"transfer_host_jobs": jobs, "transfer_host_job_secrets": {"quick": {"GLOBUS_CLIENT_SECRET": "from-the-file"}}}})
    assert rc == 0, output[-4000:]
    yield hosts
    hosts.cleanup()


def run(hosts, seconds, env=None):
    with open(hosts.path("h", "sleep"), "w") as handle:
        handle.write(str(seconds))
    started = time.monotonic()
    result = subprocess.run([hosts.path("h", "opt/bin/scidata-replication-run"), "quick"], capture_output=True,
                            text=True, timeout=120, check=False, env=env or {"PATH": "/usr/bin:/bin"})
    return result.returncode, result.stderr, time.monotonic() - started


def test_the_callers_environment_does_not_reach_the_job(runner):
    leaky = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", PYTHONPATH="/tmp/elsewhere", GLOBUS_SDK_ENVIRONMENT="sandbox",
                 ANSIBLE_CONFIG="/tmp/other.cfg")
    rc, stderr, _seconds = run(runner, 0, env=leaky)
    assert rc == 0, stderr
    with open(runner.path("h", "env.out")) as handle:
        env = dict(line.split("=", 1) for line in handle.read().splitlines() if "=" in line)
    assert "ANSIBLE_STDOUT_CALLBACK" not in env and "PYTHONPATH" not in env and "ANSIBLE_CONFIG" not in env
    assert env["GLOBUS_SDK_ENVIRONMENT"] == "test"  # the job's own, not the caller's
    assert env["GLOBUS_CLIENT_SECRET"] == "from-the-file"
    assert env["HOME"] == runner.path("h", "var/lib")
    assert "SCIDATA_RUNNER_CLEAN" not in env


def test_a_run_is_stopped_after_the_jobs_timeout(runner):
    rc, stderr, seconds = run(runner, 60)
    assert rc == 124 and seconds < 30, (rc, stderr, seconds)
    assert "job quick stopped after its timeout of 3s" in stderr


def test_a_skipped_run_says_so(runner):
    holder = subprocess.Popen(["flock", runner.path("h", "var/lib/locks/quick.run.lock"), "sleep", "30"])
    try:
        time.sleep(0.5)
        rc, stderr, _seconds = run(runner, 0)
        assert rc == 75 and "job quick skipped: the previous run still holds the lock" in stderr, stderr
    finally:
        holder.kill()
        holder.wait()
