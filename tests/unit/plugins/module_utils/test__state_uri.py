# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""state_db values that could carry a password or be mistaken for a SQLite file name."""

from __future__ import annotations

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError
from ansible_collections.scidata.replication.plugins.module_utils._state import parse_state_db


@pytest.mark.parametrize("value", [
    "postgresql://repl@db.example.org/replication?password=s3cret",
    "postgres://repl@db.example.org/replication?sslmode=require&password=s3cret",
    "postgresql:///replication?host=/run/postgresql&PASSWORD=s3cret",
    "postgresql://repl:s3cret@db.example.org/replication",
    "POSTGRESQL://repl:s3cret@db.example.org/replication",
    "postgresql://repl:@db.example.org/replication",
])
def test_password_anywhere_in_a_uri_is_refused(value):
    with pytest.raises(ConfigError) as info:
        parse_state_db(value)
    assert "must not contain a password" in info.value.msg
    assert "s3cret" not in info.value.msg


@pytest.mark.parametrize("value", [
    "host=db.example.org password=s3cret dbname=replication",
    "dbname=replication",
    "  host = /run/postgresql user=repl",
])
def test_key_value_dsn_is_refused_not_taken_for_a_sqlite_file(value):
    with pytest.raises(ConfigError) as info:
        parse_state_db(value)
    assert "key=value" in info.value.msg and "postgresql://" in info.value.msg
    assert "s3cret" not in info.value.msg


def test_unsupported_scheme_does_not_echo_credentials():
    with pytest.raises(ConfigError) as info:
        parse_state_db("mysql://repl:s3cret@db.example.org/replication")
    assert "mysql://" in info.value.msg and "s3cret" not in info.value.msg


@pytest.mark.parametrize("value", [
    "postgresql://repl@db.example.org/replication?sslmode=require&passfile=/etc/scidata/pgpass",
    "postgresql://repl@db1.example.org:5432,db2.example.org:5433/replication?target_session_attrs=read-write",
])
def test_uri_without_password_is_kept_as_given(value):
    assert parse_state_db(value) == ("postgresql", value)


def test_sqlite_file_whose_name_holds_an_equals_sign(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_state_db("./run=1.db") == ("sqlite", str(tmp_path / "run=1.db"))
    assert parse_state_db("sqlite:///run=1.db") == ("sqlite", str(tmp_path / "run=1.db"))
