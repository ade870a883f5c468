# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""globus_login in check mode writes nothing; globus_collection_info fails on refused credentials."""

from __future__ import annotations

import os

import pytest

from globus_setup import DST, NATIVE, SRC, client_env


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()


def test_login_in_check_mode_writes_nothing_then_shows_the_waiting_login(ansible, emulator, tmp_path):
    token_dir = tmp_path / "globus"
    args = {"client_id": NATIVE, "token_file": str(token_dir / "tokens.json")}
    planned, _output = ansible.run("scidata.replication.globus_login", args, check=True, extra_env=emulator.env)
    assert not planned.get("failed"), planned
    assert planned["logged_in"] is False and planned["authorize_url"] is None
    assert not token_dir.exists()  # neither the directory nor a pending login

    started, _output = ansible.run("scidata.replication.globus_login", args, extra_env=emulator.env)
    assert started["authorize_url"].startswith(emulator.base_url)
    assert sorted(os.listdir(str(token_dir))) == ["tokens.json.pending"]
    pending = (token_dir / "tokens.json.pending").read_bytes()
    again, _output = ansible.run("scidata.replication.globus_login", args, check=True, extra_env=emulator.env)
    assert again["authorize_url"] == started["authorize_url"]
    assert (token_dir / "tokens.json.pending").read_bytes() == pending


def test_collection_info_fails_when_the_token_is_refused(ansible, emulator):
    result, output = ansible.run("scidata.replication.globus_collection_info", {"collections": [{"id": DST}]},
                                 extra_env=dict(emulator.env, GLOBUS_ACCESS_TOKEN="not-a-valid-token-4711"))
    assert result.get("failed"), result
    assert "401" in result["msg"] and DST in result["msg"]
    assert "not-a-valid-token-4711" not in output


def test_collection_info_fails_when_a_path_is_denied(ansible, emulator):
    result, _output = ansible.run("scidata.replication.globus_collection_info",
                                  {"collections": [{"id": SRC, "paths": ["/../outside/"]}]}, extra_env=client_env(emulator))
    assert result.get("failed"), result
    assert "403" in result["msg"] and "EndpointPermissionDenied" in result["msg"]
