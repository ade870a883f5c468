# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A state_db value holding a password, or written as a key=value DSN, fails the task before anything is
opened or created, and the password reaches neither the result nor the run log."""

from __future__ import annotations

import os

import pytest

MODULE = "scidata.replication.state_schema"


@pytest.mark.parametrize("state_db, refusal", [
    ("postgresql://repl@127.0.0.1:1/replication?password=s3cret", "must not contain a password"),
    ("host=127.0.0.1 port=1 password=s3cret dbname=replication", "key=value"),
])
def test_refused_state_db_fails_clearly_and_creates_nothing(ansible, tmp_path, monkeypatch, state_db, refusal):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # a value taken for a relative SQLite file name would be created here
    log_file = tmp_path / "run.log"
    result, output = ansible.run(MODULE, {"state_db": state_db, "log_file": str(log_file)})
    assert result.get("failed") and refusal in result["msg"], result
    assert "s3cret" not in output
    assert os.listdir(workdir) == []
    assert not log_file.exists() or "s3cret" not in log_file.read_text()
