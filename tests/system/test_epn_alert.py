# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""epn_alert through real ansible-playbook runs: SFTP to the harness's OpenSSH sshd (paramiko),
the portal test server, the SMTP sink (and an SMTP server with AUTH), SQLite and PostgreSQL.
Assertions are on the captured mail and the database."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._state import StateDB
from ansible_collections.scidata.replication.tests.portal.epn_site import (
    PORTAL_SECRETS,
    make_epn,
    migrate,
    portal_args,
    portal_config,
    query,
    ssh_args,
    visit,
    when,
)
from ansible_collections.scidata.replication.tests.portal.portal_server import PortalServer

MODULE = "scidata.replication.epn_alert"
CAP_MAP = {"10001": "projA"}
SMTP_USER = "alerts"
SMTP_PASSWORD = "smtp-s3cret-pw-5e1f"


@pytest.fixture
def portal():
    visits_101 = [
        visit("10001a", when(days=-4), when(days=-3)),
        visit("60001a", when(days=-10), when(days=-9), pi=("Ada", "Lovelace", "ada@example.org"),
              scientists=[("Alan", "Turing", "alan@example.org")]),
        visit("60001a", when(days=-5), when(days=-4), pi=("Ada", "Lovelace", "ada@example.org"),
              scientists=[("Grace", "Hopper", "grace@example.org")]),
    ]
    visits_102 = [visit("60002b", when(days=-2), when(days=-1), pi=("Rosalind", "Franklin", "rf@example.org"),
                        scientists=[("<b>Mallory</b>", "O'Brien & Co", "m@example.org")])]
    with PortalServer(portal_config(visits_101, visits_102)) as server:
        yield server


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "src" / "MX"
    for epn in ("10001a", "60001a", "60002b", "60003c", "-e sh"):
        make_epn(root, epn, {"f": b"x\n"})
    (root / "README.txt").write_text("not an EPN\n")
    return root


def alert_args(sshd, portal, tmp_path, state_db, smtp_port, **extra):
    args = ssh_args(sshd.info)
    args.update(portal_args(portal))
    args.update(src_prefix=str(tmp_path / "src"), beamline="MX", epn_cap_map=CAP_MAP, state_db=state_db,
                lock_file=str(tmp_path / "alert.lock"), mail_from="replication@example.org",
                mail_to=["data-managers@example.org", "oncall@example.org"], smtp_host="127.0.0.1",
                smtp_port=smtp_port, smtp_timeout=5)
    args.update(extra)
    return args


def alerted(url):
    return {r["epn"]: r["alerted_at"] for r in query(url, "SELECT epn, alerted_at FROM epns WHERE alerted_at IS NOT NULL")}


def parts(message):
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


def test_alert_once_not_again_then_again_after_realert_days(ansible, sshd, smtp_sink, portal, site, state_db_url,
                                                            tmp_path):
    if state_db_url.startswith("postgresql"):
        migrate(state_db_url)
    args = alert_args(sshd, portal, tmp_path, state_db_url, smtp_sink.info["port"], realert_after_days=7)
    before = len(smtp_sink.messages())

    # check mode renders the message and sends and records nothing
    result, _out = ansible.run(MODULE, args, check=True)
    assert result["changed"] is True and result["sent"] is False and not result.get("failed"), result
    assert "60003c" in result["message"]["text"] and "<table" in result["message"]["html"]
    assert len(smtp_sink.messages()) == before
    if state_db_url.startswith("postgresql"):
        assert alerted(state_db_url) == {}
    else:
        assert not os.path.exists(state_db_url)

    # first run: one mail about the three unknown EPNs (at -vvv: no secret in the output)
    result, output = ansible.run(MODULE, args, verbosity=3)
    assert result["changed"] is True and result["sent"] is True and not result.get("failed"), result
    assert result["alerted"] == ["60001a", "60002b", "60003c"] and result["listed"] == 4
    assert result["rejected"] == [{"epn": "-e sh", "reason": "EPN starts with '-'"}]
    messages = smtp_sink.messages()
    assert len(messages) == before + 1
    mail = messages[-1]
    assert mail["Subject"] == "Unknown ownership of EPNs"
    assert mail["From"] == "replication@example.org"
    assert mail["X-Envelope-To"] == "data-managers@example.org, oncall@example.org"
    text, html = parts(mail)
    assert "EPN 60001a (equipment 101)" in text
    assert "Principal scientist: Ada Lovelace <ada@example.org>" in text
    assert "Grace Hopper <grace@example.org>" in text and "Alan Turing <alan@example.org>" in text  # both visits
    assert "Rosalind Franklin" in text and "EPN 60002b (equipment 102)" in text
    assert "EPNs without visit details in the last 30 days" in text and "  60003c" in text
    assert "10001a" not in text and "-e sh" not in text
    assert "<td>60003c</td>" in html and "&lt;b&gt;Mallory&lt;/b&gt; O&#39;Brien &amp; Co" in html  # escaped
    assert "<b>Mallory</b>" not in html
    assert set(alerted(state_db_url)) == {"60001a", "60002b", "60003c"}
    for secret in list(PORTAL_SECRETS.values()) + portal.state.issued_tokens():
        assert secret not in output

    # second run: nothing is due, nothing is sent
    result, _out = ansible.run(MODULE, args)
    assert result["changed"] is False and result["sent"] is False and not result.get("failed"), result
    assert [s["epn"] for s in result["suppressed"]] == ["60001a", "60002b", "60003c"]
    assert len(smtp_sink.messages()) == before + 1

    # eight days later for 60003c: it is alerted again, alone
    first = alerted(state_db_url)
    db = StateDB(state_db_url)
    try:
        db.execute("UPDATE epns SET alerted_at = ? WHERE epn = ?", (first["60003c"] - 8 * 86400, "60003c"))
    finally:
        db.close()
    result, _out = ansible.run(MODULE, args)
    assert result["changed"] is True and result["alerted"] == ["60003c"], result
    messages = smtp_sink.messages()
    assert len(messages) == before + 2
    text, _html = parts(messages[-1])
    assert "60003c" in text and "60001a" not in text
    now = alerted(state_db_url)
    assert now["60003c"] > first["60003c"] and now["60001a"] == first["60001a"]


def test_smtp_down_fails_records_nothing_and_the_next_run_mails(ansible, sshd, smtp_sink, portal, site, tmp_path):
    import services

    state_db = str(tmp_path / "state.db")
    args = alert_args(sshd, portal, tmp_path, state_db, services.free_port())
    before = len(smtp_sink.messages())
    result, _out = ansible.run(MODULE, args)
    assert result.get("failed") and "cannot send the mail through the SMTP server" in result["msg"], result
    assert alerted(state_db) == {}
    args["smtp_port"] = smtp_sink.info["port"]
    result, _out = ansible.run(MODULE, args)
    assert result["sent"] is True and result["alerted"] == ["60001a", "60002b", "60003c"], result
    assert len(smtp_sink.messages()) == before + 1
    assert set(alerted(state_db)) == {"60001a", "60002b", "60003c"}


@pytest.fixture
def smtp_with_auth():
    """An in-process aiosmtpd that requires AUTH and remembers what it accepted."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
    import services

    class Handler(object):
        def __init__(self):
            self.messages = []
            self.logins = []

        async def handle_DATA(self, server, session, envelope):  # pylint: disable=invalid-name,unused-argument
            self.messages.append(envelope)
            return "250 OK"

    handler = Handler()

    def authenticate(server, session, envelope, mechanism, auth_data):  # pylint: disable=unused-argument
        login = auth_data.login.decode()
        handler.logins.append(login)
        # handled=False: aiosmtpd answers 535 itself when the login fails.
        return AuthResult(success=login == SMTP_USER and auth_data.password.decode() == SMTP_PASSWORD, handled=False)

    port = services.free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, auth_required=True, auth_require_tls=False,
                            authenticator=authenticate)
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_and_the_password_never_shows(ansible, sshd, portal, site, smtp_with_auth, tmp_path):
    state_db = str(tmp_path / "state.db")
    args = alert_args(sshd, portal, tmp_path, state_db, smtp_with_auth.port, smtp_user=SMTP_USER,
                      smtp_password="wrong-" + SMTP_PASSWORD)
    result, output = ansible.run(MODULE, args, verbosity=3)
    assert result.get("failed") and "refused the login" in result["msg"], result
    assert SMTP_PASSWORD not in output and alerted(state_db) == {}
    args["smtp_password"] = SMTP_PASSWORD
    result, output = ansible.run(MODULE, args, verbosity=3)
    assert result["sent"] is True, result
    # smtplib tries each mechanism the server offers before it gives up on a wrong password.
    assert set(smtp_with_auth.logins) == {SMTP_USER} and len(smtp_with_auth.messages) == 1
    assert SMTP_PASSWORD not in output
    # Over plain SMTP the password only goes to a loopback address.
    args.update(smtp_host="localhost.invalid", state_db=str(tmp_path / "other.db"))
    result, output = ansible.run(MODULE, args)
    assert result.get("failed") and "refusing to send the SMTP password" in result["msg"], result


@pytest.mark.parametrize("case", ["changed", "unknown"])
def test_sftp_host_key_must_be_known(ansible, sshd, smtp_sink, portal, site, tmp_path, case):
    known_hosts = tmp_path / "known_hosts"
    if case == "changed":
        key = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        known_hosts.write_text("[127.0.0.1]:%d %s\n" % (sshd.info["port"], " ".join(
            (tmp_path / "other_key.pub").read_text().split()[:2])))
    else:
        known_hosts.write_text("")
    content = known_hosts.read_text()
    before = len(smtp_sink.messages())
    args = alert_args(sshd, portal, tmp_path, str(tmp_path / "state.db"), smtp_sink.info["port"],
                      known_hosts_file=str(known_hosts))
    result, _out = ansible.run(MODULE, args)
    assert result.get("failed"), result
    expected = "does not match" if case == "changed" else "unknown host keys are never accepted"
    assert expected in result["msg"], result
    assert known_hosts.read_text() == content  # RejectPolicy: nothing is ever added
    assert len(smtp_sink.messages()) == before


def test_without_equipment_the_portal_is_not_asked(ansible, sshd, smtp_sink, portal, site, tmp_path):
    args = alert_args(sshd, portal, tmp_path, str(tmp_path / "state.db"), smtp_sink.info["port"])
    del args["equipment"]  # portal_url alone (as from SCIDATA_PORTAL_URL) is not enough to query it
    before = len(portal.state.requests())
    result, _out = ansible.run(MODULE, args, check=True)
    assert result["changed"] is True and not result.get("failed"), result
    assert "visit details from the facility portal" not in result["message"]["text"]
    assert "60001a  60002b  60003c" in result["message"]["text"]
    assert len(portal.state.requests()) == before and not os.path.exists(str(tmp_path / "state.db"))
