# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The AWX path: a job playbook run the way an AWX job template runs it. The credentials exist only as the
credential types inject them (environment variables and files) in the controller's environment, and the job
runs on another host over SSH, whose environment has none of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import pytest

from globus_setup import CONFIDENTIAL, DST, SECRET, SRC
from roles_support import BIN, COLLECTION_ROOT, COLLECTIONS_PATH, LeanHosts

INJECTED = ("GLOBUS_CLIENT_ID", "GLOBUS_CLIENT_SECRET", "GLOBUS_ACCESS_TOKEN", "SCIDATA_STATE_DB",
            "SCIDATA_STATE_DB_PASSWORD", "SCIDATA_SMTP_USER", "SCIDATA_SMTP_PASSWORD", "SCIDATA_PORTAL_URL",
            "SCIDATA_EPN_KEY_FILE", "SCIDATA_EPN_KNOWN_HOSTS_FILE")


def run_job(hosts, playbook, variables, injected, tmp_path):
    """ansible-playbook on a job playbook of the collection with only ``injected`` as credentials."""
    with open(tmp_path / "inventory.json", "w") as handle:
        json.dump({"all": {"hosts": {"xfer": hosts.hosts["xfer"]}}}, handle)
    with open(tmp_path / "vars.json", "w") as handle:
        json.dump(dict(variables, scidata_job_hosts="xfer"), handle)
    env = {k: v for k, v in os.environ.items() if k not in INJECTED and not k.startswith("GLOBUS_SDK")}
    env.update(injected, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="1")
    env.pop("ANSIBLE_HOST_KEY_CHECKING", None)
    result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-vvv", "-i", str(tmp_path / "inventory.json"),
                             "-e", "@%s" % (tmp_path / "vars.json"),
                             os.path.join(COLLECTION_ROOT, "playbooks", "jobs", playbook + ".yml")],
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def xfer(sshd):
    hosts = LeanHosts(sshd, ["xfer"], layout=False)
    yield hosts
    hosts.cleanup()


def test_globus_transfer_job_with_injected_credentials_on_a_remote_host(xfer, postgres, emulator, tmp_path):
    db = "awx_" + uuid.uuid4().hex[:8]
    url = postgres.create_database(db, owner=postgres.PASSWORD_ROLE)
    tree = "awx-" + uuid.uuid4().hex[:8]
    source = os.path.join(str(emulator.root), "src", tree)
    os.makedirs(source)
    with open(os.path.join(source, "data.nc"), "wb") as handle:
        handle.write(os.urandom(2000))
    injected = {"GLOBUS_CLIENT_ID": CONFIDENTIAL, "GLOBUS_CLIENT_SECRET": SECRET, "SCIDATA_STATE_DB": url,
                "SCIDATA_STATE_DB_PASSWORD": postgres.PASSWORD}
    variables = {
        "scidata_job_name": "awx-transfers",
        "scidata_job_environment": dict(emulator.env.items()),  # where the emulator is: not a credential
        "scidata_job_defaults": {"lock_file": str(tmp_path / "job.lock")},
        "scidata_globus_transfer_options": {
            "auth_mode": "client_credentials",
            "routes": [{"name": tree, "source_collection": SRC, "items": [tree + "/"],
                        "destinations": [{"collection": DST, "prefix": "/awx-replica"}]}]},
    }
    try:
        rc, output = run_job(xfer, "globus_transfer", variables, injected, tmp_path)
        assert rc == 0, output[-5000:]
        assert "ESTABLISH SSH CONNECTION" in output
        # The task was submitted with the injected client, and recorded in the injected PostgreSQL database.
        submitted = [task for task in emulator.tasks() if tree in json.dumps(task)]
        assert submitted, emulator.tasks()
        assert int(postgres.psql("SELECT count(*) FROM globus_tasks", database=db)) >= 1
        for name in ("GLOBUS_CLIENT_SECRET", "SCIDATA_STATE_DB_PASSWORD"):
            assert injected[name] not in output, name
    finally:
        postgres.psql('DROP DATABASE IF EXISTS "%s"' % db)


def test_job_without_a_state_database_stops_before_the_module(xfer, tmp_path):
    """Without SCIDATA_STATE_DB (and no state_db in the variables), the job fails clearly and no SQLite
    file appears on the host."""
    home = os.path.expanduser("~")
    default_db = os.path.join(home, ".local", "state", "scidata-replication", "state.db")
    existed = os.path.exists(default_db)
    variables = {"scidata_job_name": "awx-report",
                 "scidata_replication_report_options": {"dest": str(tmp_path / "site")}}
    rc, output = run_job(xfer, "replication_report", variables, {}, tmp_path)
    assert rc == 2, output[-4000:]
    assert "job awx-report has no state database" in output
    assert os.path.exists(default_db) == existed
    assert not os.path.exists(tmp_path / "site")


def test_epn_job_copies_the_injected_ssh_files_for_the_run_only(xfer, sshd, postgres, tmp_path):
    """The key and known_hosts files the credential type injects exist on the controller only: the job
    copies them to the host (0600, private directory) and removes them after the run."""
    db = "awx_" + uuid.uuid4().hex[:8]
    url = postgres.create_database(db, owner=postgres.PASSWORD_ROLE)
    injected_dir = tmp_path / "awx-injected"
    injected_dir.mkdir(mode=0o700)
    with open(sshd.info["key_file"]) as handle:
        (injected_dir / "key").write_text(handle.read())
    (injected_dir / "known_hosts").write_text(open(sshd.info["known_hosts"]).read())
    os.chmod(injected_dir / "key", 0o600)
    epn = tmp_path / "src" / "MX" / "70001a"
    epn.mkdir(parents=True)
    (epn / "image.cbf").write_bytes(b"x" * 100)
    tmp_path.chmod(0o755)
    injected = {"SCIDATA_STATE_DB": url, "SCIDATA_STATE_DB_PASSWORD": postgres.PASSWORD,
                "SCIDATA_EPN_KEY_FILE": str(injected_dir / "key"),
                "SCIDATA_EPN_KNOWN_HOSTS_FILE": str(injected_dir / "known_hosts")}
    variables = {"scidata_job_name": "awx-inventory",
                 "scidata_epn_inventory_options": {"host": sshd.info["host"], "port": sshd.info["port"],
                                                   "user": sshd.info["user"], "src_prefix": str(tmp_path / "src"),
                                                   "beamline": "MX"}}
    try:
        rc, output = run_job(xfer, "epn_inventory", variables, injected, tmp_path)
        assert rc == 0, output[-5000:]
        used = set(re.findall(r'"key_file": "([^"]+)"', output))
        assert used and str(injected_dir / "key") not in used, used
        for path in used:
            assert os.path.basename(os.path.dirname(path)).startswith("scidata-job-ssh.")
            assert not os.path.exists(os.path.dirname(path))  # removed after the run
        assert postgres.psql("SELECT epn FROM epns", database=db).split() == ["70001a"]
    finally:
        postgres.psql('DROP DATABASE IF EXISTS "%s"' % db)
