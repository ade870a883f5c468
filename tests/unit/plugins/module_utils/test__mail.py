# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for the mail core: Jinja2 rendering (sandbox, escaping, strict names) and SMTP
sending against a real in-process SMTP server (aiosmtpd), plain, with AUTH and with STARTTLS."""

from __future__ import annotations

import email
import socket
import ssl
import subprocess
from email import policy

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError, MailError
from ansible_collections.scidata.replication.plugins.module_utils._mail import (
    build_message,
    render,
    render_alert,
    send_message,
    table_rows,
)

PASSWORD = "mail-pw-0bf6c2"


def context(**extra):
    base = dict(
        with_details=[{
            "epn": "60001a", "start_time": "2025-03-01T08:00:00+11:00", "end_time": "2025-03-02T08:00:00+11:00",
            "equipment_id": "101",
            "principal_scientist": {"first_names": "Ada", "last_name": "Lovelace", "email": "ada@example.org"},
            "data_scientists": [{"first_names": "<script>x</script>", "last_name": "O'Brien", "email": ""}],
        }],
        without_details=["60003c", "60004d"],
        without_details_rows=[["60003c", "60004d"]],
        unknown_count=3, host="sftp.example.org", directory="/data/MX2", visit_day_range=30,
        subject="Unknown ownership of EPNs", generated_at="2025-03-10T01:00:00+00:00",
    )
    base.update(extra)
    return base


def test_default_templates_render_people_and_the_table():
    text, html = render_alert(context())
    assert "3 EPN folder(s) on sftp.example.org:/data/MX2 have no project" in text
    assert "EPN 60001a (equipment 101)" in text
    assert "Principal scientist: Ada Lovelace <ada@example.org>" in text
    assert "<script>x</script> O'Brien" in text  # text is not HTML
    assert "  60003c  60004d" in text and "in the last 30 days" in text
    assert "&lt;script&gt;x&lt;/script&gt; O&#39;Brien" in html and "<script>" not in html
    assert "<tr><td>60003c</td><td>60004d</td></tr>" in html
    assert 'href="mailto:ada@example.org"' in html


def test_sections_are_left_out_when_empty():
    text, html = render_alert(context(with_details=[], without_details=[], without_details_rows=[]))
    assert "visit details" not in text and "<table" not in html


def test_custom_templates_undefined_names_and_the_sandbox():
    assert render("{{ host }}: {{ unknown_count }}", context()) == "sftp.example.org: 3"
    with pytest.raises(MailError, match="undefined"):
        render("{{ no_such_name }}", context())
    with pytest.raises(MailError):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}", context())
    with pytest.raises(MailError):
        render("{% for %}", context())


def test_table_rows():
    assert table_rows(range(10), 8) == [list(range(8)), [8, 9]]
    assert table_rows([]) == []


def test_message_is_multipart_alternative():
    message = build_message("Subject", "from@example.org", ["a@example.org", "b@example.org"], "text", "<p>html</p>")
    assert message.get_content_type() == "multipart/alternative"
    assert message["To"] == "a@example.org, b@example.org" and message["Message-ID"].endswith("@example.org>")
    assert message.get_body(("plain",)).get_content() == "text\n"
    with pytest.raises(ConfigError):
        build_message("Subject", "from@example.org", [], "text")


# -- SMTP ----------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Handler(object):
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):  # pylint: disable=invalid-name,unused-argument
        self.envelopes.append(envelope)
        return "250 OK"


def _authenticator(server, session, envelope, mechanism, auth_data):  # pylint: disable=unused-argument
    from aiosmtpd.smtp import AuthResult

    if auth_data.password.decode() == PASSWORD:
        return AuthResult(success=True)
    # A server that echoes what it was given: the password must still not reach the error.
    return AuthResult(success=False, handled=False,
                      message="535 5.7.8 bad password %s" % auth_data.password.decode())


@pytest.fixture
def smtp_server(tmp_path):
    from aiosmtpd.controller import Controller

    servers = []

    def start(**kwargs):
        handler = _Handler()
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        servers.append(controller)
        handler.port = port
        return handler

    yield start
    for controller in servers:
        controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def sample():
    return build_message("Unknown ownership of EPNs", "replication@example.org", ["dm@example.org"], "hello\n",
                         "<p>hello</p>")


def test_plain_smtp_delivers(smtp_server):
    server = smtp_server()
    assert send_message(sample(), "127.0.0.1", server.port, timeout=5) == []
    (envelope,) = server.envelopes
    assert envelope.rcpt_tos == ["dm@example.org"]
    received = email.message_from_bytes(envelope.original_content, policy=policy.default)
    assert received["Subject"] == "Unknown ownership of EPNs"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_login_and_the_password_stays_out_of_errors(smtp_server):
    server = smtp_server(auth_required=True, auth_require_tls=False, authenticator=_authenticator)
    assert send_message(sample(), "127.0.0.1", server.port, user="alerts", password=PASSWORD, timeout=5) == []
    with pytest.raises(MailError) as raised:
        send_message(sample(), "127.0.0.1", server.port, user="alerts", password=PASSWORD + "x", timeout=5)
    assert "refused the login" in raised.value.msg and PASSWORD not in raised.value.msg
    assert len(server.envelopes) == 1


def test_password_never_goes_unencrypted_to_another_host():
    with pytest.raises(ConfigError, match="without encryption"):
        send_message(sample(), "smtp.example.org", 25, user="u", password="p")
    with pytest.raises(ConfigError):
        send_message(sample(), "127.0.0.1", 25, user="u", password=None)
    with pytest.raises(ConfigError):
        send_message(sample(), "127.0.0.1", 25, security="ssl3")


def test_unreachable_server_is_a_mail_error():
    with pytest.raises(MailError, match="cannot send the mail through the SMTP server 127.0.0.1"):
        send_message(sample(), "127.0.0.1", free_port(), timeout=2)


def test_starttls_verifies_the_certificate(smtp_server, certificate):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = smtp_server(tls_context=context, require_starttls=True)
    with pytest.raises(MailError, match="certificate verify failed"):
        send_message(sample(), "127.0.0.1", server.port, security="starttls", timeout=5)
    assert send_message(sample(), "127.0.0.1", server.port, security="starttls", ca_path=cert, timeout=5) == []
    assert send_message(sample(), "127.0.0.1", server.port, security="starttls", validate_certs=False,
                        timeout=5) == []
    with pytest.raises(MailError):
        send_message(sample(), "127.0.0.1", server.port, security="none", timeout=5)  # the server wants STARTTLS
    assert len(server.envelopes) == 2
