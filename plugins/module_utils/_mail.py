# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""Jinja2 text + HTML mail rendering and SMTP sending (epn_alert).

The default templates ship here as strings (a collection may only ship Python under
``plugins/module_utils``); a deployment overrides them with template files. Templates run
in Jinja2's sandbox with undefined names as errors, and the HTML one autoescapes, so a
name from the portal cannot inject markup. ``send_message`` speaks plain SMTP, STARTTLS
or implicit TLS with certificates verified by default, and never sends a password over an
unencrypted connection to another host.
"""

from __future__ import annotations

import datetime
import ipaddress
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ansible_collections.scidata.replication.plugins.module_utils._errors import (
    ConfigError,
    MailError,
    MissingLibraryError,
)

try:
    import jinja2
    import jinja2.sandbox

    HAS_JINJA2 = True
    JINJA2_IMPORT_ERROR = None
except ImportError as exc:
    HAS_JINJA2 = False
    JINJA2_IMPORT_ERROR = exc

DEFAULT_SUBJECT = "Unknown ownership of EPNs"
DEFAULT_SMTP_TIMEOUT = 30
SECURITY_CHOICES = ("none", "starttls", "tls")
TABLE_COLUMNS = 8
_REDACTED = "********"

# Context: with_details (epn, start_time, end_time, equipment_id, principal_scientist and
# data_scientists as {first_names, last_name, email}), without_details (EPN names),
# without_details_rows (the same in rows of 8), unknown_count, host, directory,
# visit_day_range, generated_at, portal_error (why visit details are missing, or None). With trim_blocks, a tag that ends a line of text is
# written ``+%}`` so the line break after it stays (``{%+`` keeps the indent before one).
DEFAULT_TEXT_TEMPLATE = """\
{%- macro person(p) -%}
{{ p.first_names }} {{ p.last_name }}{% if p.email %} <{{ p.email }}>{% endif %}
{%- endmacro -%}
{{ unknown_count }} EPN folder(s) on {{ host }}:{{ directory }} have no project in epn_cap_map,
so they are not replicated.
{% if portal_error is defined and portal_error %}

Visit details are missing: the facility portal could not be read ({{ portal_error }}).
{% endif %}
{% if with_details %}

EPNs with visit details from the facility portal
================================================
{% for e in with_details %}

EPN {{ e.epn }}{% if e.equipment_id %} (equipment {{ e.equipment_id }}){% endif +%}
  Visit:               {{ e.start_time }} to {{ e.end_time }}
  Principal scientist: {% if e.principal_scientist %}{{ person(e.principal_scientist) }}{% else %}unknown{% endif +%}
  Data scientists:     {% for p in e.data_scientists %}{% if not loop.first +%}
                       {%+ endif %}{{ person(p) }}{% else %}none listed{% endfor +%}
{% endfor %}
{% endif %}
{% if without_details %}

EPNs without visit details in the last {{ visit_day_range }} days
{% for row in without_details_rows %}
  {{ row | join("  ") }}
{% endfor %}
{% endif %}

Add each EPN's base number to epn_cap_map (EPN base number -> project folder) to
replicate it.

{{ "-- " }}
scidata.replication.epn_alert, {{ generated_at }}
"""

DEFAULT_HTML_TEMPLATE = """\
{%- macro person(p) -%}
{{ p.first_names }} {{ p.last_name }}{% if p.email %} &lt;<a href="mailto:{{ p.email }}">{{ p.email }}</a>&gt;{% endif %}
{%- endmacro -%}
<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>{{ subject }}</title></head>
<body>
<p>{{ unknown_count }} EPN folder(s) on <code>{{ host }}:{{ directory }}</code> have no project in
<code>epn_cap_map</code>, so they are not replicated.</p>
{% if portal_error is defined and portal_error %}
<p><strong>Visit details are missing:</strong> the facility portal could not be read ({{ portal_error }}).</p>
{% endif %}
{% if with_details %}
<h2>EPNs with visit details from the facility portal</h2>
<table border="1" cellpadding="4" cellspacing="0">
<tr><th>EPN</th><th>Equipment</th><th>Visit start</th><th>Visit end</th><th>Principal scientist</th><th>Data scientists</th></tr>
{% for e in with_details %}
<tr><td>{{ e.epn }}</td><td>{{ e.equipment_id or "" }}</td><td>{{ e.start_time }}</td><td>{{ e.end_time }}</td>
<td>{% if e.principal_scientist %}{{ person(e.principal_scientist) }}{% else %}unknown{% endif %}</td>
<td>{% for p in e.data_scientists %}{{ person(p) }}{% if not loop.last %}<br>{% endif %}{% else %}none listed{% endfor %}</td></tr>
{% endfor %}
</table>
{% endif %}
{% if without_details %}
<h2>EPNs without visit details in the last {{ visit_day_range }} days</h2>
<table border="1" cellpadding="4" cellspacing="0">
{% for row in without_details_rows %}
<tr>{% for epn in row %}<td>{{ epn }}</td>{% endfor %}</tr>
{% endfor %}
</table>
{% endif %}
<p>Add each EPN's base number to <code>epn_cap_map</code> (EPN base number &rarr; project folder) to replicate it.</p>
<p><small>scidata.replication.epn_alert, {{ generated_at }}</small></p>
</body>
</html>
"""


def _require_jinja2():
    if not HAS_JINJA2:
        raise MissingLibraryError("jinja2", "jinja2", reason="to render the alert mail", exception=JINJA2_IMPORT_ERROR)


def read_template(path, option):
    """The text of a template file, or a ConfigError naming the option."""
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("cannot read %s %s: %s" % (option, path, exc), option=option) from None


def table_rows(items, columns=TABLE_COLUMNS):
    """Split ``items`` into rows of ``columns`` (the last row may be shorter)."""
    items = list(items)
    return [items[i:i + columns] for i in range(0, len(items), columns)]


def render(template_text, context, html=False, name="template"):
    """Render one template in Jinja2's sandbox; undefined names are errors."""
    _require_jinja2()
    environment = jinja2.sandbox.SandboxedEnvironment(
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    try:
        return environment.from_string(template_text).render(**context)
    except jinja2.TemplateError as exc:
        raise MailError("cannot render the %s: %s" % (name, exc)) from None


def render_alert(context, text_template=None, html_template=None):
    """Render the alert's text and HTML parts (default templates unless others are given)."""
    text = render(DEFAULT_TEXT_TEMPLATE if text_template is None else text_template, context, html=False,
                  name="text template")
    html = render(DEFAULT_HTML_TEMPLATE if html_template is None else html_template, context, html=True,
                  name="HTML template")
    return text, html


def build_message(subject, mail_from, mail_to, text, html=None):
    """A multipart/alternative message (text first, then HTML)."""
    if not mail_to:
        raise ConfigError("mail_to needs at least one address", option="mail_to")
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = mail_from
    message["To"] = ", ".join(mail_to)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = mail_from.rpartition("@")[2] or None
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def _is_loopback(host):
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tls_context(validate_certs, ca_path):
    context = ssl.create_default_context(cafile=ca_path)
    if not validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def send_message(message, host, port=25, security="none", user=None, password=None, timeout=DEFAULT_SMTP_TIMEOUT,
                 validate_certs=True, ca_path=None):
    """Hand ``message`` to an SMTP server; returns the refused recipients (normally empty).

    Raises MailError when the server cannot be reached or refuses the message; the
    password never appears in the error.
    """
    if security not in SECURITY_CHOICES:
        raise ConfigError("smtp_security must be one of %s" % ", ".join(SECURITY_CHOICES), option="smtp_security")
    if (user is None) != (password is None):
        raise ConfigError("smtp_user and smtp_password go together", option="smtp_user")
    if password is not None and security == "none" and not _is_loopback(host):
        raise ConfigError(
            "refusing to send the SMTP password to %s without encryption; set smtp_security to starttls or tls"
            % host, option="smtp_security")

    def scrub(text):
        return text.replace(password, _REDACTED) if password else text

    where = "%s:%d" % (host, port)
    try:
        if security == "tls":
            server = smtplib.SMTP_SSL(host, port, timeout=timeout, context=_tls_context(validate_certs, ca_path))
        else:
            server = smtplib.SMTP(host, port, timeout=timeout)
        try:
            server.ehlo_or_helo_if_needed()
            if security == "starttls":
                server.starttls(context=_tls_context(validate_certs, ca_path))
                server.ehlo()
            if user is not None:
                server.login(user, password)
            refused = server.send_message(message)
        finally:
            try:
                server.quit()
            except (smtplib.SMTPException, OSError):
                server.close()
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError("the SMTP server %s refused the login of %s: %s" % (where, user, scrub(str(exc))),
                        smtp_host=host, smtp_port=port) from None
    except (smtplib.SMTPException, ssl.SSLError, socket.timeout, OSError) as exc:
        raise MailError("cannot send the mail through the SMTP server %s: %s" % (where, scrub(str(exc)) or
                                                                                 exc.__class__.__name__),
                        smtp_host=host, smtp_port=port) from None
    return sorted(refused or {})


def now_text():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
