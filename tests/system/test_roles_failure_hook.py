# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""transfer_host_on_failure_command runs when a job fails for any reason: under cron and by hand through the
runner (with the exit status), under systemd through OnFailure= and a template unit that calls the runner.
ansible-playbook in the virtual environment is a stand-in that exits with a chosen status."""

from __future__ import annotations

import os
import subprocess

from roles_support import LeanHosts

STAND_IN = "#!/bin/sh\nexit \"$(cat {status})\"\n"


def test_the_failure_hook_runs_for_failed_runs_only(sshd):
    hosts = LeanHosts(sshd, ["h"])
    failures = hosts.path("h", "failures.txt")
    try:
        os.makedirs(hosts.path("h", "opt/venv/bin"))
        with open(hosts.path("h", "opt/venv/bin/ansible-playbook"), "w") as handle:
            handle.write(STAND_IN.format(status=hosts.path("h", "status")))
        os.chmod(hosts.path("h", "opt/venv/bin/ansible-playbook"), 0o755)
        play = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "scidata.replication.transfer_host"}]}]
        jobs = [{"name": "cronjob", "playbook": "globus_task_events", "scheduler": "cron"},
                {"name": "unitjob", "playbook": "globus_task_events", "scheduler": "systemd"}]
        rc, output = hosts.run(play, "--tags", "transfer_host_configure,transfer_host_run", name="deploy", host_vars={
            "h": {"transfer_host_jobs": jobs, "transfer_host_on_failure_command": 'echo "$1 $2" >> %s' % failures}})
        assert rc == 0, output[-4000:]

        def run(status, *args):
            with open(hosts.path("h", "status"), "w") as handle:
                handle.write(str(status))
            return subprocess.run([hosts.path("h", "opt/bin/scidata-replication-run")] + list(args), capture_output=True,
                                  text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"}).returncode

        assert run(0, "cronjob") == 0
        assert not os.path.exists(failures)
        assert run(2, "cronjob") == 2
        assert run(0, "--failed", "unitjob") == 0  # what scidata-replication-failure@unitjob.service runs
        with open(failures) as handle:
            assert handle.read().splitlines() == ["cronjob 2", "unitjob failed"]
        with open(hosts.path("h", "systemd/scidata-replication-unitjob.service")) as handle:
            assert "OnFailure=scidata-replication-failure@unitjob.service\n" in handle.read()
        units = [hosts.path("h", "systemd", name) for name in ("scidata-replication-unitjob.service",
                                                               "scidata-replication-failure@.service")]
        verify = subprocess.run(["systemd-analyze", "verify"] + units, capture_output=True, text=True, check=False)
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    finally:
        hosts.cleanup()
