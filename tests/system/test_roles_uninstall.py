# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/uninstall.yml removes what the roles deployed (schedules, job playbooks, secrets, the
installation, log rotation, the dashboard's nginx site) and keeps the data unless asked; over real SSH."""

from __future__ import annotations

import os

from roles_support import COLLECTION_ROOT, LeanHosts

JOBS = [{"name": "events", "playbook": "globus_task_events", "scheduler": "cron"},
        {"name": "report", "playbook": "replication_report", "scheduler": "systemd",
         "vars": {"scidata_replication_report_options": {"dest": "/srv/site"}}}]
UNINSTALL = os.path.join(COLLECTION_ROOT, "playbooks", "uninstall.yml")


def test_uninstall_removes_the_deployment_and_keeps_the_data_unless_asked(sshd):
    hosts = LeanHosts(sshd, ["h"])
    nginx = {"dashboard_nginx_sites_available_dir": hosts.path("h", "nginx/available"),
             "dashboard_nginx_sites_enabled_dir": hosts.path("h", "nginx/enabled"),
             "dashboard_www_dir": hosts.path("h", "www")}
    try:
        os.makedirs(hosts.path("h", "nginx/available"))
        os.makedirs(hosts.path("h", "nginx/enabled"))
        play = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "scidata.replication.transfer_host"}]}]
        host_vars = {"h": {"transfer_host_jobs": JOBS, "transfer_host_job_secrets": {"events": {"GLOBUS_CLIENT_SECRET": "x"}}}}
        rc, output = hosts.run(play, "--tags", "transfer_host_configure,transfer_host_run", host_vars=host_vars,
                               name="deploy")
        assert rc == 0, output[-4000:]
        # The dashboard's nginx site, as its configure step leaves it (checked with the real nginx).
        dashboard = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "scidata.replication.dashboard"}]}]
        rc, output = hosts.run(dashboard, "--tags", "dashboard_configure", host_vars={"h": nginx}, name="dashboard")
        assert rc == 0, output[-4000:]
        with open(hosts.path("h", "var/lib/state.db"), "w") as handle:
            handle.write("state")
        deployed = hosts.files("h")
        for path in ("cron.d/scidata-replication-events", "systemd/scidata-replication-report.timer",
                     "etc/secrets/events.env", "etc/jobs/report.yml", "opt/bin/scidata-replication-run",
                     "logrotate.d/scidata-replication", "var/lib/uninstall-dashboard.json",
                     "nginx/available/scidata-replication", "nginx/enabled/scidata-replication",
                     "opt/bin/scidata-replication-nginx-check"):
            assert path in deployed, (path, deployed)

        groups = {"scidata_transfer_hosts": ["h"], "scidata_dashboard": ["h"]}
        rc, output = hosts.run(UNINSTALL, host_vars={"h": nginx}, groups=groups, name="uninstall")
        assert rc == 0, output[-4000:]
        assert hosts.files("h") == ["var/lib/state.db", "var/lib/uninstall-dashboard.json"], output[-3000:]
        assert os.path.isdir(hosts.path("h", "www"))
        rc, output = hosts.run(UNINSTALL, host_vars={"h": nginx}, groups=groups, name="uninstall")
        assert rc == 0 and "changed=0" in output, output[-3000:]
        # Asked to, it takes the data too.
        rc, output = hosts.run(UNINSTALL, "-e", "scidata_uninstall_data=true", host_vars={"h": nginx}, groups=groups,
                               name="uninstall")
        assert rc == 0, output[-4000:]
        assert hosts.files("h") == [] and not os.path.exists(hosts.path("h", "var/lib"))
    finally:
        hosts.cleanup()
