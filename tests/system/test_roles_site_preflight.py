# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/site.yml checks the inputs of every role of a host (and the jobs of transfer_host_jobs) before
any role changes it: a typo in the last role's variables stops the host before the first role runs."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import uuid

from roles_support import COLLECTION_ROOT, LeanHosts

SITE = os.path.join(COLLECTION_ROOT, "playbooks", "site.yml")


def test_a_bad_input_of_a_later_role_stops_the_host_before_any_change(sshd):
    hosts = LeanHosts(sshd, ["dash", "jobs"], layout=False)
    user = "scidpf" + uuid.uuid4().hex[:8]  # a service account the roles would create: the first change
    account = {"transfer_host_user": user, "transfer_host_group": user}
    host_vars = {
        "dash": dict(account, dashboard_listen_port="eighty"),
        "jobs": dict(account, transfer_host_jobs=[{"name": "events", "playbook": "globus_task_events", "nice": "very"}]),
    }
    groups = {"scidata_transfer_hosts": ["dash", "jobs"], "scidata_dashboard": ["dash"]}
    try:
        rc, output = hosts.run(SITE, host_vars=host_vars, groups=groups, name="site")
        assert rc == 2, output[-4000:]
        recap = dict(re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M))
        assert recap == {"dash": "0", "jobs": "0"}, output[-4000:]
        assert "dashboard_listen_port" in output and "nice" in output
        assert not os.path.exists(hosts.path("dash")) and not os.path.exists(hosts.path("jobs"))
        assert user not in {entry.pw_name for entry in pwd.getpwall()}
    finally:
        subprocess.run(["userdel", user], capture_output=True, check=False)
        subprocess.run(["groupdel", user], capture_output=True, check=False)
        hosts.cleanup()
