# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A failing job mails its failure with the collection's own SMTP code: ansible-playbook sees only this
collection (no community.general, as on a transfer host), and the mail reaches the harness's SMTP sink."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import yaml

from roles_support import BIN, COLLECTION_ROOT, COLLECTIONS_PATH


def only_this_collection_env():
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False",
               ANSIBLE_NOCOLOR="1")
    for name in ("SCIDATA_SMTP_USER", "SCIDATA_SMTP_PASSWORD"):
        env.pop(name, None)
    return env


def test_failing_job_mails_without_other_collections(smtp_sink, tmp_path):
    env = only_this_collection_env()
    listed = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "list", "--format", "yaml"],
                            env=env, capture_output=True, text=True, check=True).stdout
    collections = {name for path in (yaml.safe_load(listed) or {}).values() for name in path}
    assert collections == {"scidata.replication"}, collections
    dest = tmp_path / "site"
    dest.mkdir()
    (dest / "not-from-the-module.txt").write_text("replication_report refuses to replace this directory")
    job = "report-" + uuid.uuid4().hex[:6]
    variables = {
        "ansible_python_interpreter": sys.executable,
        "scidata_job_name": job,
        "scidata_job_defaults": {"state_db": str(tmp_path / "state.db")},
        "scidata_replication_report_options": {"dest": str(dest)},
        "scidata_job_mail": {"to": ["ops@example.org", "oncall@example.org"], "from": "jobs@example.org",
                             "host": "127.0.0.1", "port": smtp_sink.info["port"], "security": "none"},
    }
    with open(tmp_path / "vars.json", "w") as handle:
        json.dump(variables, handle)
    before = len(smtp_sink.messages())
    result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
                             "@%s" % (tmp_path / "vars.json"),
                             os.path.join(COLLECTION_ROOT, "playbooks", "jobs", "replication_report.yml")],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "couldn't resolve module" not in output
    assert "scidata.replication job %s failed" % job in output
    messages = smtp_sink.messages()[before:]
    assert len(messages) == 1, output[-3000:]
    message = messages[0]
    assert message["Subject"] == "[scidata.replication] job %s failed on localhost" % job
    assert message["To"] == "ops@example.org, oncall@example.org" and message["From"] == "jobs@example.org"
    body = message.get_body().get_content()
    assert "Render the static site" in body and "did not write" in body, body
