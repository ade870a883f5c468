# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""Tests for the EPN core: name validation, the epn_cap_map lookup, path templates, the
visit selection rule, and the portal client against the real portal test server."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._epn import (
    PortalClient,
    current_start,
    epn_base,
    fetch_visits,
    fetch_visits_to_sync,
    plan_epn_transfers,
    portal_clients,
    project_for_epn,
    redact_url,
    render_path_template,
    select_visits_to_sync,
    validate_epn,
)
from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError, PortalError
from ansible_collections.scidata.replication.tests.portal.portal_server import PortalServer

PORTAL_SERVER_SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
    "portal", "portal_server.py",
)

MELBOURNE = datetime.timezone(datetime.timedelta(hours=11))
NOW = datetime.datetime(2025, 3, 10, 12, 0, tzinfo=MELBOURNE)

SECRETS = ("client-secret-1", "client-secret-2", "user-pass-1", "user-pass-2")


def visit(epn, start, end, **extra):
    record = {
        "epn": epn,
        "start_time": start,
        "end_time": end,
        "principal_scientist": {"first_names": "Ada", "last_name": "Lovelace", "email": "ada@example.org"},
        "data_scientists": [{"first_names": "Alan", "last_name": "Turing", "email": "alan@example.org"}],
    }
    record.update(extra)
    return record


EQUIPMENT_101 = [
    visit("11111a", "2025-03-01T08:00:00+11:00", "2025-03-02T08:00:00+11:00"),
    visit("22222", "2025-03-10T08:00:00+11:00", "2025-03-10T20:00:00+11:00"),  # running at NOW
    visit("33333", "2025-03-09T20:00:00+11:00", "2025-03-10T09:00:00+11:00"),  # ended after 22222 began
]
EQUIPMENT_202 = [
    visit("44444-1", "2025-03-05T00:00:00Z", "2025-03-06T00:00:00Z"),
    visit("55555", "2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z"),  # older than 30 days
    visit("66666", "2025-03-10T12:30:00+11:00", "2025-03-10T16:00:00+11:00"),  # not started yet
]


def portal_config(token_lifetime=3600):
    return {
        "clients": [
            {"client_name": "mx1-client", "client_password": "client-secret-1"},
            {"client_name": "mx2-client", "client_password": "client-secret-2"},
        ],
        "users": [
            {"username": "mx1user", "password": "user-pass-1"},
            {"username": "mx2user", "password": "user-pass-2"},
        ],
        "equipment": {
            "101": {"users": ["mx1user"], "visits": EQUIPMENT_101},
            "202": {"users": ["mx2user"], "visits": EQUIPMENT_202},
        },
        "token_lifetime_seconds": token_lifetime,
    }


EQUIPMENT = [
    {"id": 101, "client_name": "mx1-client", "client_password": "client-secret-1",
     "username": "mx1user", "password": "user-pass-1"},
    {"id": 202, "client_name": "mx2-client", "client_password": "client-secret-2",
     "username": "mx2user", "password": "user-pass-2"},
]


@pytest.fixture
def portal():
    with PortalServer(portal_config()) as server:
        yield server


def client_for(portal, index=0, **overrides):
    entry = dict(EQUIPMENT[index], **overrides)
    return PortalClient(
        portal.base_url, entry["id"], entry["client_name"], entry["client_password"],
        entry["username"], entry["password"], timeout=5,
    )


def calls(portal):
    return [(r["method"], r["path"], r["status"]) for r in portal.state.requests()]


def assert_no_secret(exc, portal):
    text = str(exc) + repr(exc.details)
    for secret in SECRETS + tuple(portal.state.issued_tokens()):
        assert secret not in text


def admin_post(portal, path, payload=None):
    request = urllib.request.Request(
        portal.base_url + path, data=json.dumps(payload or {}).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


# --- EPN names, cap map, templates ----------------------------------------------------

@pytest.mark.parametrize("epn", ["12345", "12345a", "12345-1", "ABC_1.2", "20180101b"])
def test_valid_epns(epn):
    assert validate_epn(epn) is None


@pytest.mark.parametrize("epn, reason", [
    ("../x", ".."),
    ("x/../y", ".."),
    ("..", ".."),
    (".", "'.'"),
    ("-e sh", "starts with '-'"),
    ("-rf", "starts with '-'"),
    ("a/b", "'/'"),
    ("12345\n", "control character"),
    ("a b", "pattern"),
    ("$(touch pwned)", "pattern"),
    ("ünï", "pattern"),
    ("", "empty"),
    (12345, "not a string"),
])
def test_rejected_epns_give_a_reason(epn, reason):
    assert reason in validate_epn(epn)


def test_custom_pattern_cannot_relax_the_safety_rules():
    assert validate_epn("12345-1", pattern=r"[0-9]+[a-z]?") is not None
    assert validate_epn("12345b", pattern=r"[0-9]+[a-z]?") is None
    for epn in ("../x", "-e", "a/b", "."):
        assert validate_epn(epn, pattern=r".*") is not None
    with pytest.raises(ConfigError):
        validate_epn("1", pattern="[")


@pytest.mark.parametrize("epn, base", [("12345a", "12345"), ("12345-1", "12345"), ("12345", "12345"), ("abc1", None), ("", None)])
def test_epn_base_is_leading_digits(epn, base):
    assert epn_base(epn) == base


def test_project_lookup_by_base_number():
    cap_map = {"12345": "cap001", 67890: "cap002"}  # YAML gives integer keys when unquoted
    assert project_for_epn("12345a", cap_map) == "cap001"
    assert project_for_epn("12345-1", cap_map) == "cap001"
    assert project_for_epn("67890", cap_map) == "cap002"
    assert project_for_epn("1234", cap_map) is None
    assert project_for_epn("x12345", cap_map) is None
    assert project_for_epn("12345", None) is None


def test_plan_sorts_epns_into_transfers_rejected_and_unmapped():
    plan = plan_epn_transfers(
        ["12345a", "../x", "99999", "-e sh", "12345a", "67890-1", "abc", "13579"],
        {"12345": "cap001", "67890": "cap002", "13579": "../evil"},
        dest_root="/srv/massive/",
        src_prefix="/data",
        beamline="MX2",
    )
    assert plan["transfers"] == [
        {"epn": "12345a", "project": "cap001",
         "source_path": "/data/MX2/12345a/", "dest_path": "/srv/massive/cap001/12345a/data/"},
        {"epn": "67890-1", "project": "cap002",
         "source_path": "/data/MX2/67890-1/", "dest_path": "/srv/massive/cap002/67890-1/data/"},
    ]
    assert [r["epn"] for r in plan["rejected"]] == ["../x", "-e sh", "13579"]
    assert "starts with '-'" in plan["rejected"][1]["reason"]
    assert "epn_cap_map" in plan["rejected"][2]["reason"]
    assert plan["unmapped"] == ["99999", "abc"]


def test_plan_with_custom_templates_and_root_directories():
    plan = plan_epn_transfers(
        ["12345a"], {"12345": "cap001"}, dest_root="/", src_prefix="/",
        dest_template="{dest_root}/{project}/as/{epn}/", source_template="{src_prefix}/data/{epn}/data/",
    )
    assert plan["transfers"][0]["source_path"] == "/data/12345a/data/"
    assert plan["transfers"][0]["dest_path"] == "/cap001/as/12345a/"


@pytest.mark.parametrize("kwargs", [
    {"dest_template": "{dest_root}/{epn.__class__}/"},
    {"dest_template": "{dest_root}/{0}/"},
    {"dest_template": "{dest_root}/{epn!r}/"},
    {"dest_template": "{dest_root}/{epn:>20}/"},
    {"dest_template": "{dest_root}/{home}/"},
    {"dest_template": "{project}/{epn}"},
    {"dest_template": "{dest_root}/../{epn}"},
    {"dest_template": "{dest_root}/{epn"},
    {"beamline": None},
    {"beamline": "../MX"},
    {"dest_root": "relative"},
    {"src_prefix": "data"},
    {"epn_pattern": "("},
])
def test_plan_refuses_bad_configuration(kwargs):
    arguments = dict(dest_root="/srv", src_prefix="/data", beamline="MX1")
    arguments.update(kwargs)
    with pytest.raises(ConfigError):
        plan_epn_transfers([], {}, **arguments)


def test_render_path_template_places_values_verbatim():
    assert render_path_template("{dest_root}/{epn}/", {"dest_root": "/a", "epn": "{dest_root}"}) == "/a/{dest_root}/"


# --- which visits to sync -------------------------------------------------------------

def test_running_visit_holds_back_visits_that_ended_after_it_started():
    result = select_visits_to_sync(EQUIPMENT_101 + EQUIPMENT_202, NOW, 30)
    assert [v["epn"] for v in result["visits"]] == ["11111a", "44444-1"]
    assert result["current_start"] == "2025-03-10T08:00:00+11:00"


def test_without_running_visits_everything_ended_before_now_is_ready():
    ended = [v for v in EQUIPMENT_101 + EQUIPMENT_202 if v["epn"] != "22222"]
    result = select_visits_to_sync(ended, NOW, 30)
    assert [v["epn"] for v in result["visits"]] == ["11111a", "44444-1", "33333"]
    assert result["current_start"] == NOW.isoformat()


def test_day_range_counts_back_from_current_start():
    visits = [
        visit("1", "2025-03-01T00:00:00+11:00", "2025-03-02T00:00:00+11:00"),
        visit("2", "2025-03-05T00:00:00+11:00", "2025-03-06T00:00:00+11:00"),
        visit("3", "2025-03-10T00:00:00+11:00", "2025-03-10T20:00:00+11:00"),  # running
    ]
    # current_start is 2025-03-10T00:00; 5 days back is 2025-03-05T00:00.
    assert [v["epn"] for v in select_visits_to_sync(visits, NOW, 5)["visits"]] == ["2"]
    assert [v["epn"] for v in select_visits_to_sync(visits, NOW, 8)["visits"]] == ["1", "2"]
    assert select_visits_to_sync(visits, NOW, 0)["visits"] == []


def test_epn_with_a_running_visit_is_never_synced():
    visits = [
        visit("12345", "2025-03-01T00:00:00+11:00", "2025-03-02T00:00:00+11:00"),
        visit("12345", "2025-03-10T10:00:00+11:00", "2025-03-10T20:00:00+11:00"),
    ]
    result = select_visits_to_sync(visits, NOW, 30)
    assert result["visits"] == []
    assert result["skipped"] == [{"epn": "12345", "reason": "EPN has a visit still running"}]


def test_one_entry_per_epn_keeping_the_latest_visit():
    visits = [
        visit("12345", "2025-03-01T00:00:00+11:00", "2025-03-02T00:00:00+11:00", id=1),
        visit("12345", "2025-03-04T00:00:00+11:00", "2025-03-05T00:00:00+11:00", id=2),
        visit("12345", "2025-03-01T00:00:00+11:00", "2025-03-02T00:00:00+11:00", id=3),
    ]
    assert [v["id"] for v in select_visits_to_sync(visits, NOW, 30)["visits"]] == [2]


def test_time_formats_and_unreadable_visits():
    visits = [
        visit("naive", "2025-03-09T08:00:00", "2025-03-09T10:00:00"),  # read in NOW's timezone
        visit("zulu", "2025-03-08T00:00:00Z", "2025-03-08T01:00:00Z"),
        visit("broken", "yesterday", "today"),
        {"start_time": "2025-03-01T00:00:00Z", "end_time": "2025-03-02T00:00:00Z"},
    ]
    result = select_visits_to_sync(visits, NOW, 30)
    assert [v["epn"] for v in result["visits"]] == ["zulu", "naive"]
    assert [s["epn"] for s in result["skipped"]] == ["broken", None]
    # A naive running visit counts too: 10:00 local is before NOW.
    running = [visit("r", "2025-03-10T10:00:00", "2025-03-10T13:00:00")]
    assert current_start(running, NOW) == datetime.datetime(2025, 3, 10, 10, 0, tzinfo=MELBOURNE)


def test_selection_argument_checks():
    with pytest.raises(ValueError):
        select_visits_to_sync([], datetime.datetime(2025, 3, 10), 30)
    with pytest.raises(ConfigError):
        select_visits_to_sync([], NOW, -1)
    with pytest.raises(ConfigError):
        select_visits_to_sync([], NOW, "30")


# --- portal client against the test server --------------------------------------------

def test_login_and_visits(portal):
    client = client_for(portal)
    visits = client.get_visits(NOW - datetime.timedelta(days=30), NOW)
    assert sorted(v["epn"] for v in visits) == ["11111a", "22222", "33333"]
    assert visits[0]["principal_scientist"]["email"] == "ada@example.org"

    log = portal.state.requests()
    assert calls(portal) == [("POST", "/api/v1/oauth/token", 200), ("GET", "/api/v1/equipment/101/visits", 200)]
    assert log[0]["client_name"] == "mx1-client"
    assert log[0]["form"] == {"username": "mx1user", "password": "REDACTED", "grant_type": "password"}
    assert log[1]["query"]["access_token"] == "REDACTED"
    assert log[1]["query"]["start_time"] == "2025-02-08T12:00:00+11:00"
    assert log[1]["query"]["end_time"] == "2025-03-10T12:00:00+11:00"
    dumped = json.dumps(log)
    for secret in SECRETS + tuple(portal.state.issued_tokens()):
        assert secret not in dumped


def test_expired_token_logs_in_again_once_and_retries(portal):
    client = client_for(portal)
    client.get_visits(NOW - datetime.timedelta(days=1), NOW)
    assert admin_post(portal, "/_portal/expire_tokens") == {"expired": 1}
    admin_post(portal, "/_portal/visits", {"equipment_id": "101", "visits": [visit("77777", "2025-03-09T00:00:00Z", "2025-03-09T02:00:00Z")]})

    visits = client.get_visits(NOW - datetime.timedelta(days=1), NOW)

    assert [v["epn"] for v in visits] == ["77777"]
    assert calls(portal) == [
        ("POST", "/api/v1/oauth/token", 200),
        ("GET", "/api/v1/equipment/101/visits", 200),
        ("GET", "/api/v1/equipment/101/visits", 401),
        ("POST", "/api/v1/oauth/token", 200),
        ("GET", "/api/v1/equipment/101/visits", 200),
    ]


def test_second_401_is_an_error_not_a_loop():
    with PortalServer(portal_config(token_lifetime=0)) as portal:
        client = client_for(portal)
        with pytest.raises(PortalError) as caught:
            client.get_visits(NOW - datetime.timedelta(days=1), NOW)
        assert "expired" in caught.value.msg
        assert caught.value.details["status"] == 401
        assert "access_token=********&" in caught.value.details["url"]
        assert [c[0] for c in calls(portal)] == ["POST", "GET", "POST", "GET"]
        assert_no_secret(caught.value, portal)


@pytest.mark.parametrize("overrides, message", [
    ({"client_password": "wrong-client-secret"}, "Client authentication failed."),
    ({"client_name": "nobody"}, "Client authentication failed."),
    ({"password": "wrong-user-pass"}, "The user credentials were incorrect."),
])
def test_bad_credentials_raise_portal_error_with_server_message(portal, overrides, message):
    client = client_for(portal, **overrides)
    with pytest.raises(PortalError) as caught:
        client.login()
    assert message in caught.value.msg
    assert caught.value.details["status"] == 401
    assert caught.value.details["equipment_id"] == "101"
    text = str(caught.value) + repr(caught.value.details)
    for secret in SECRETS + ("wrong-client-secret", "wrong-user-pass"):
        assert secret not in text


def test_server_error_message_is_scrubbed_of_secrets(portal):
    # A portal may echo what it was sent; here the password happens to be the start of the
    # server's message, so the echo is visible and must be masked.
    client = client_for(portal, password="The user credentials")
    with pytest.raises(PortalError) as caught:
        client.login()
    assert caught.value.msg == "facility portal login failed for equipment 101: ******** were incorrect."


def test_forbidden_equipment_keeps_the_token_out_of_the_error(portal):
    client = client_for(portal, id=202)
    with pytest.raises(PortalError) as caught:
        client.get_visits(NOW - datetime.timedelta(days=1), NOW)
    assert caught.value.details["status"] == 403
    assert "Not allowed to view equipment 202." in caught.value.msg
    assert_no_secret(caught.value, portal)


def test_several_equipment_entries_each_with_their_own_credentials(portal):
    clients = portal_clients(portal.base_url, EQUIPMENT, timeout=5, allow_http=True)
    visits = fetch_visits(clients, NOW - datetime.timedelta(days=30), NOW + datetime.timedelta(hours=1))
    assert sorted((v["equipment_id"], v["epn"]) for v in visits) == [
        ("101", "11111a"), ("101", "22222"), ("101", "33333"), ("202", "44444-1"), ("202", "66666"),
    ]
    assert [r["client_name"] for r in portal.state.requests() if r["method"] == "POST"] == ["mx1-client", "mx2-client"]


def test_fetch_visits_to_sync_end_to_end(portal):
    clients = portal_clients(portal.base_url, EQUIPMENT, timeout=5, allow_http=True)
    result = fetch_visits_to_sync(clients, NOW, 30)
    assert [(v["equipment_id"], v["epn"]) for v in result["visits"]] == [("101", "11111a"), ("202", "44444-1")]
    assert result["current_start"] == "2025-03-10T08:00:00+11:00"
    windows = [(r["query"]["start_time"], r["query"]["end_time"]) for r in portal.state.requests() if r["method"] == "GET"]
    assert windows == [
        ("2025-03-10T12:00:00+11:00", "2025-03-10T13:00:00+11:00"),
        ("2025-03-10T12:00:00+11:00", "2025-03-10T13:00:00+11:00"),
        ("2025-02-08T08:00:00+11:00", "2025-03-10T12:00:00+11:00"),
        ("2025-02-08T08:00:00+11:00", "2025-03-10T12:00:00+11:00"),
    ]


def test_portal_clients_config_errors_name_keys_not_values():
    entry = dict(EQUIPMENT[0], password="")
    with pytest.raises(ConfigError) as caught:
        portal_clients("https://portal.example.org", [entry])
    assert "password" in caught.value.msg and "client-secret-1" not in caught.value.msg
    with pytest.raises(ConfigError):
        portal_clients("https://portal.example.org", [])
    for base_url in ("ftp://portal.example.org", "https://portal.example.org/?x=1", "portal.example.org", None):
        with pytest.raises(ConfigError):
            portal_clients(base_url, EQUIPMENT)


def test_timeout_applies_to_calls():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)  # accepts connections into the backlog but never answers
    try:
        client = PortalClient("http://127.0.0.1:%d" % silent.getsockname()[1], 101, "c", "client-secret-1",
                              "u", "user-pass-1", timeout=0.5, retries=0)
        started = time.monotonic()
        with pytest.raises(PortalError) as caught:
            client.login()
        assert time.monotonic() - started < 5
        assert "cannot reach" in caught.value.msg
    finally:
        silent.close()


def test_unreachable_portal():
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()
    client = PortalClient("http://127.0.0.1:%d" % port, 101, "c", "client-secret-1", "u", "user-pass-1", timeout=2)
    with pytest.raises(PortalError) as caught:
        client.login()
    assert "cannot reach the facility portal at http://127.0.0.1:%d/api/v1/oauth/token" % port in caught.value.msg


def test_tls_is_verified_by_default(tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    with PortalServer(portal_config(), certfile=cert, keyfile=key) as portal:
        assert portal.base_url.startswith("https://")
        with pytest.raises(PortalError) as caught:
            client_for(portal).login()
        assert "certificate" in caught.value.msg.lower()
        assert calls(portal) == []

        trusted = PortalClient(portal.base_url, 101, "mx1-client", "client-secret-1", "mx1user", "user-pass-1",
                               ca_path=cert, timeout=5)
        assert [v["epn"] for v in trusted.get_visits(NOW - datetime.timedelta(days=30), NOW)] == ["11111a", "22222", "33333"]


def test_redact_url():
    assert redact_url("https://u:pw@portal/api/v1/equipment/1/visits?access_token=abc&start_time=x") == \
        "https://********@portal/api/v1/equipment/1/visits?access_token=********&start_time=x"


# --- the portal server as a program ---------------------------------------------------

def test_portal_server_cli_writes_port_and_stops_on_sigterm(tmp_path):
    config = tmp_path / "portal.json"
    config.write_text(json.dumps(portal_config()))
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, PORTAL_SERVER_SCRIPT, "--config", str(config), "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        port = int(port_file.read_text())
        client = PortalClient("http://127.0.0.1:%d" % port, 101, "mx1-client", "client-secret-1", "mx1user", "user-pass-1", timeout=5)
        assert len(client.get_visits(NOW - datetime.timedelta(days=30), NOW)) == 3
        with urllib.request.urlopen("http://127.0.0.1:%d/_portal/requests" % port, timeout=5) as response:
            assert len(json.load(response)["requests"]) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert not port_file.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
