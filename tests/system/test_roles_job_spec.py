# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The job definitions are checked against the private role _job's argument spec (and what a spec cannot
say) before anything is written: one host alias per bad value, one good host, over real SSH."""

from __future__ import annotations

import re

import pytest

from roles_support import LeanHosts

GOOD_JOB = {"name": "report", "playbook": "replication_report", "scheduler": "systemd",
            "vars": {"scidata_replication_report_options": {"dest": "/srv/site"}},
            "on_calendar": ["*-*-* 02:00:00", "hourly"], "read_write_paths": ["/srv/site", "/srv/cache"],
            "timeout_start_sec": "900", "nice": 5, "protect_home": "read-only", "cron": {"minute": "*/5"}}
# One wrong field per host, each one that used to reach a unit, a timer or a cron line.
BAD_FIELDS = {
    "bad-nice": {"nice": "very"},
    "bad-timeout": {"timeout_start_sec": "forever"},
    "bad-protect-home": {"protect_home": "maybe"},
    "bad-calendar": {"on_calendar": "every night please"},
    "bad-calendar-type": {"on_calendar": {"daily": True}},
    "bad-rw-paths": {"read_write_paths": "/srv/site"},
    "bad-rw-relative": {"read_write_paths": ["srv/site"]},
    "bad-playbook": {"playbook": "rm_rf"},
    "bad-cron": {"scheduler": "cron", "cron": {"minute": "0 * * * * root touch /tmp/owned #"}},
    "bad-cron-key": {"scheduler": "cron", "cron": {"minutes": "5"}},
    "bad-scheduler": {"scheduler": "sometimes"},
    "bad-state": {"state": "gone"},
    "bad-delay": {"randomized_delay_sec": "soon"},
    "bad-failure-mail": {"failure_mail": "perhaps"},
    "bad-environment": {"environment": ["GLOBUS_SDK_ENVIRONMENT=test"]},
    "bad-name": {"name": "Report.Nightly"},
    "bad-description": {"description": "two\nlines"},
    "unknown-field": {"on_calender": "daily"},
}
PLAY = [{"name": "Jobs defined on transfer_host", "hosts": "all", "gather_facts": False,
         "roles": [{"role": "scidata.replication.transfer_host"}]}]


@pytest.fixture(scope="module")
def spec_run(sshd):
    hosts = LeanHosts(sshd, ["good"] + sorted(BAD_FIELDS))
    host_vars = {name: {"transfer_host_jobs": [dict(GOOD_JOB, **fields)]} for name, fields in BAD_FIELDS.items()}
    host_vars["good"] = {"transfer_host_jobs": [GOOD_JOB]}
    try:
        rc, output = hosts.run(PLAY, "--tags", "transfer_host_run", host_vars=host_vars, name="spec")
        yield hosts, rc, output
    finally:
        hosts.cleanup()


def recap(output):
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=\d+\s+unreachable=\d+\s+failed=(\d+)",
                                                             output, re.M)}


def test_each_bad_field_fails_before_anything_is_written(spec_run):
    hosts, rc, output = spec_run
    assert rc == 2, output[-4000:]
    failed = recap(output)
    assert {name for name, count in failed.items() if count} == set(BAD_FIELDS), output[-6000:]
    for name in BAD_FIELDS:
        assert hosts.files(name) == [], (name, hosts.files(name))
    assert "Validation of arguments failed" in output
    assert "Failed to parse calendar specification" in output or "every night please" in output


def test_the_good_job_is_rendered_from_its_checked_fields(spec_run):
    hosts, _rc, output = spec_run
    assert recap(output)["good"] == 0, output[-4000:]
    assert hosts.files("good") == ["etc/jobs/manifest-transfer_host.json", "etc/jobs/report.yml", "etc/secrets/report.env",
                                   "systemd/scidata-replication-report.service",
                                   "systemd/scidata-replication-report.timer"]
    with open(hosts.path("good", "systemd/scidata-replication-report.service")) as handle:
        service = handle.read()
    prefix = hosts.path("good")
    assert "ReadWritePaths=%s/var/lib %s/var/log -/srv/site -/srv/cache\n" % (prefix, prefix) in service
    for line in ("TimeoutStartSec=900", "Nice=5", "ProtectHome=read-only"):
        assert line + "\n" in service
    with open(hosts.path("good", "systemd/scidata-replication-report.timer")) as handle:
        timer = handle.read()
    assert "OnCalendar=*-*-* 02:00:00\nOnCalendar=hourly\n" in timer


def test_the_private_role_refuses_to_be_used_directly(sshd):
    hosts = LeanHosts(sshd, ["direct"])
    try:
        play = [{"hosts": "all", "gather_facts": False, "tasks": [{"ansible.builtin.include_role": {
            "name": "scidata.replication._job"}, "vars": {"_job_jobs": [GOOD_JOB]}}]}]
        rc, output = hosts.run(play, name="direct")
        assert rc == 2 and "scidata.replication._job is private" in output, output[-3000:]
        assert hosts.files("direct") == []
    finally:
        hosts.cleanup()
