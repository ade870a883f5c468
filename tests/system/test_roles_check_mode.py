# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A check run on a fresh host previews instead of failing: state_db against a server without the
database yet, and transfer_host's configuration and jobs on a host without its directories."""

from __future__ import annotations

import os
import uuid

from roles_support import LeanHosts


def test_state_db_check_run_before_the_database_exists(sshd, postgres):
    name = "scichk_" + uuid.uuid4().hex[:8]
    hosts = LeanHosts(sshd, ["db"], layout=False)
    play = [{"hosts": "all", "become": True, "gather_facts": False, "roles": [{"role": "scidata.replication.state_db"}]}]
    host_vars = {"db": {"state_db_name": name, "state_db_user": name, "state_db_password": "pw-" + name,
                        "state_db_readonly_users": [{"name": name + "_ro", "password": "ro-" + name}],
                        "state_db_install_server": False, "state_db_login_host": "127.0.0.1",
                        "state_db_login_port": postgres.info["port"]}}
    try:
        rc, output = hosts.run(play, "--check", "--tags", "state_db_configure,state_db_run", host_vars=host_vars,
                               name="check")
        assert rc == 0, output[-4000:]
        assert "does not exist yet" in output
        assert postgres.psql("SELECT count(*) FROM pg_database WHERE datname = '%s'" % name).strip() == "0"
        assert postgres.psql("SELECT count(*) FROM pg_roles WHERE rolname LIKE '%s%%'" % name).strip() == "0"
    finally:
        hosts.cleanup()


def test_transfer_host_check_run_on_a_fresh_host(sshd):
    hosts = LeanHosts(sshd, ["fresh"], layout=False)
    play = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "scidata.replication.transfer_host"}]}]
    jobs = [{"name": "events", "playbook": "globus_task_events", "scheduler": "cron"},
            {"name": "transfers", "playbook": "globus_transfer", "scheduler": "systemd",
             "vars": {"scidata_globus_transfer_options": {"routes": []}}}]
    try:
        rc, output = hosts.run(play, "--check", "--tags", "transfer_host_configure,transfer_host_run",
                               host_vars={"fresh": {"transfer_host_jobs": jobs}}, name="check")
        assert rc == 0, output[-4000:]
        assert not os.path.exists(hosts.path("fresh"))
    finally:
        hosts.cleanup()
