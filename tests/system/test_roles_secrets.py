# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""No secret set in the inventory reaches -vvv output or the JSON callback (what AWX stores as job events):
state_db against the harness's PostgreSQL with read-only users, and transfer_host's jobs with every kind of
secret, over real SSH. A read-only user added after the tables exist can read them."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from roles_support import LeanHosts


def secret(name):
    return "%s-%s" % (name, uuid.uuid4().hex)


@pytest.fixture(scope="module")
def database(postgres):
    name = "scisec_" + uuid.uuid4().hex[:8]
    readers = ["%s_ro%d" % (name, n) for n in (1, 2)]
    yield name, readers
    postgres.psql('DROP DATABASE IF EXISTS "%s"' % name)
    for role in [name] + readers:
        postgres.psql('DROP ROLE IF EXISTS "%s"' % role)


def state_db_vars(postgres, name, readers, secrets):
    return {
        "state_db_name": name,
        "state_db_user": name,
        "state_db_password": secrets["db_password"],
        "state_db_readonly_users": [{"name": reader, "password": secrets[reader]} for reader in readers],
        "state_db_install_server": False,
        "state_db_login_host": "127.0.0.1",
        "state_db_login_port": postgres.info["port"],
    }


def assert_no_secret(output, secrets, what):
    for name, value in secrets.items():
        assert value not in output, (what, name)


def test_state_db_keeps_passwords_out_of_vvv_and_json_output(sshd, postgres, database):
    name, readers = database
    secrets = {"db_password": secret("db")}
    secrets.update((reader, secret(reader)) for reader in readers)
    hosts = LeanHosts(sshd, ["db"], layout=False)
    play = [{"hosts": "all", "become": True, "gather_facts": False,
             "roles": [{"role": "scidata.replication.state_db"}]}]
    try:
        # First with one read-only user, at -vvv; the tables are created by the migration after the grants.
        rc, output = hosts.run(play, "-vvv", "--tags", "state_db_configure,state_db_run", name="first",
                               host_vars={"db": state_db_vars(postgres, name, readers[:1], secrets)})
        assert rc == 0, output[-4000:]
        assert "ESTABLISH SSH CONNECTION" in output and "Let the read-only roles connect" in output
        assert_no_secret(output, secrets, "-vvv")
        # Then a second read-only user joins once the tables exist, seen through the JSON callback.
        rc, output = hosts.run(play, "-vvv", "--tags", "state_db_configure,state_db_run", name="second",
                               host_vars={"db": state_db_vars(postgres, name, readers, secrets)},
                               extra_env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
        assert rc == 0, output[-4000:]
        events = json.loads(output[output.rindex("\n{\n") + 1:])  # after the -vvv lines
        assert events["stats"]["db"]["failures"] == 0
        assert_no_secret(output, secrets, "json callback")
    finally:
        hosts.cleanup()
    # The late reader reads the tables that existed before it did.
    for reader in readers:
        count = postgres.psql("SET ROLE %s; SELECT count(*) FROM schema_version" % reader, database=name)
        assert int(count) >= 1, reader


def test_job_secrets_stay_out_of_vvv_and_json_output(sshd):
    secrets = {"db_password": secret("db"), "smtp_password": secret("smtp"), "client_secret": secret("globus"),
               "portal_password": secret("portal")}
    hosts = LeanHosts(sshd, ["jobs"])
    host_vars = {"jobs": {
        "transfer_host_state_db_password": secrets["db_password"],
        "transfer_host_smtp_user": "mailer",
        "transfer_host_smtp_password": secrets["smtp_password"],
        "transfer_host_failure_mail_to": ["ops@example.org"],
        "transfer_host_jobs": [{"name": "events", "playbook": "globus_task_events", "scheduler": "cron",
                                "environment": {"GLOBUS_SDK_ENVIRONMENT": "test"}}],
        "transfer_host_job_secrets": {"events": {"GLOBUS_CLIENT_SECRET": secrets["client_secret"],
                                                 "SCIDATA_PORTAL_PASSWORD": secrets["portal_password"]}},
    }}
    play = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "scidata.replication.transfer_host"}]}]
    try:
        for callback in ("default", "ansible.posix.json"):
            rc, output = hosts.run(play, "-vvv", "--tags", "transfer_host_run", host_vars=host_vars, name=callback,
                                   extra_env={"ANSIBLE_STDOUT_CALLBACK": callback})
            assert rc == 0, output[-4000:]
            assert_no_secret(output, secrets, callback)
        with open(hosts.path("jobs", "etc/secrets/events.env")) as handle:
            env_file = handle.read()
        for value in secrets.values():
            assert '"%s"' % value in env_file
        assert os.stat(hosts.path("jobs", "etc/secrets/events.env")).st_mode & 0o777 == 0o600
    finally:
        hosts.cleanup()
