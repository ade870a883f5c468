# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Jobs that are no longer declared leave nothing behind: a job deleted from the inventory loses its units,
cron file, playbook and secrets on the next run, and the jobs of a role the host no longer has are removed
through that role's manifest (what playbooks/site.yml does for a host that left a group)."""

from __future__ import annotations

import json

from roles_support import LeanHosts

JOBS = [{"name": "events", "playbook": "globus_task_events", "scheduler": "cron"},
        {"name": "transfers", "playbook": "globus_transfer", "scheduler": "systemd",
         "vars": {"scidata_globus_transfer_options": {"routes": []}}}]
SECRETS = {"events": {"GLOBUS_CLIENT_SECRET": "s3cret-events"}, "transfers": {"GLOBUS_CLIENT_SECRET": "s3cret-transfers"}}
FILES = {
    "events": ["cron.d/scidata-replication-events", "etc/jobs/events.yml", "etc/secrets/events.env"],
    "transfers": ["etc/jobs/transfers.yml", "etc/secrets/transfers.env", "systemd/scidata-replication-transfers.service",
                  "systemd/scidata-replication-transfers.timer"],
}
ROLE_PLAY = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "scidata.replication.transfer_host"}]}]
RETIRE_PLAY = [{"hosts": "all", "gather_facts": False, "tasks": [{"ansible.builtin.include_role": {
    "name": "scidata.replication.transfer_host", "tasks_from": "retire"},
    "vars": {"transfer_host_retire_roles": ["transfer_host"]}}]}]


def test_undeclared_jobs_are_removed(sshd):
    hosts = LeanHosts(sshd, ["h"])
    try:
        def apply(jobs):
            rc, output = hosts.run(ROLE_PLAY, "--tags", "transfer_host_run", name="apply",
                                   host_vars={"h": {"transfer_host_jobs": jobs, "transfer_host_job_secrets": SECRETS}})
            assert rc == 0, output[-4000:]
            return output

        def deployed():
            return [f for f in hosts.files("h") if f != "etc/jobs/manifest-transfer_host.json"]

        apply(JOBS)
        assert deployed() == sorted(FILES["events"] + FILES["transfers"])
        with open(hosts.path("h", "etc/jobs/manifest-transfer_host.json")) as handle:
            assert json.load(handle)["jobs"] == ["events", "transfers"]
        # The transfers job is deleted from the inventory: everything of it goes, secrets included.
        output = apply(JOBS[:1])
        assert deployed() == sorted(FILES["events"]), output[-3000:]
        with open(hosts.path("h", "etc/jobs/manifest-transfer_host.json")) as handle:
            assert json.load(handle)["jobs"] == ["events"]
        # The role is no longer applied to the host: its manifest says what to remove.
        rc, output = hosts.run(RETIRE_PLAY, name="retire")
        assert rc == 0, output[-4000:]
        assert hosts.files("h") == [], output[-3000:]
        # Nothing left to do the second time.
        rc, output = hosts.run(RETIRE_PLAY, name="retire")
        assert rc == 0 and "changed=0" in output, output[-3000:]
    finally:
        hosts.cleanup()
