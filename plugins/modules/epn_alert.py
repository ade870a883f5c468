#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
module: epn_alert
short_description: Mail an alert about synchrotron EPNs that have no project folder
version_added: 1.0.0
description:
  - Lists the EPN folders visible over SFTP on O(host), finds those whose base number has no project in
    O(epn_cap_map) ("Unknown ownership of EPNs"), reads their visit details (principal scientist and data
    scientists) from the facility portal, and mails a text and HTML alert rendered with Jinja2. It does what
    epnalert (HPC_ASSyncy) did, without repeating itself every day. Without O(equipment) the portal is not queried
    and every unknown EPN is listed as having no visit details. When the portal cannot be read (after
    O(portal_retries)), the alert is still sent, without visit details and saying why (RV(portal_error)).
  - An unknown EPN is alerted once, and again only after O(realert_after_days); the time of each alert is kept in
    the state database. The module reports C(changed) only when it sent a mail.
  - When the SMTP server cannot be reached or refuses the mail, the module fails and records nothing, so the next
    run tries again.
  - SFTP uses paramiko with the host keys in O(known_hosts_file) and C(RejectPolicy), so an unknown or changed host
    key is refused, never added.
extends_documentation_fragment:
  - scidata.replication._epn
  - scidata.replication._epn.portal
  - scidata.replication._state
  - scidata.replication._attributes
  - scidata.replication._attributes.actiongroup_state_epn
attributes:
  check_mode:
    support: full
    details:
      - Lists, queries the portal and renders the mail, and returns it in RV(message); sends nothing and records
        nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A second run within O(realert_after_days) sends nothing.
options:
  epn_cap_map:
    description:
      - Maps an EPN base number (the leading digits of the EPN name) to its project folder; the EPNs it does not
        map are the unknown ones.
    type: dict
    required: true
  realert_after_days:
    description:
      - Days after which an EPN that is still unknown is alerted again. V(0) alerts each EPN only once.
    type: int
    default: 7
  mail_to:
    description:
      - Recipients of the alert.
    type: list
    elements: str
    required: true
  mail_from:
    description:
      - Sender address of the alert.
    type: str
    required: true
  subject:
    description:
      - Subject of the alert.
    type: str
    default: Unknown ownership of EPNs
  template_text:
    description:
      - Path of a Jinja2 template for the text part, instead of the one shipped with the collection.
      - "The template sees: C(with_details) (EPNs with visit details, each with C(epn), C(start_time), C(end_time),
        C(equipment_id), C(principal_scientist) and C(data_scientists) as C(first_names), C(last_name), C(email)),
        C(without_details) (EPN names), C(without_details_rows) (the same in rows of 8), C(unknown_count),
        C(host), C(directory), C(visit_day_range), C(subject) and C(generated_at). Undefined names are errors, and
        templates run in Jinja2's sandbox."
    type: path
  template_html:
    description:
      - Path of a Jinja2 template for the HTML part (autoescaped), instead of the one shipped with the collection.
        It sees the same names as O(template_text).
    type: path
  smtp_host:
    description:
      - SMTP server that takes the mail.
    type: str
    default: localhost
  smtp_port:
    description:
      - SMTP port. Usually V(25) for O(smtp_security=none), V(587) for V(starttls) and V(465) for V(tls).
    type: int
    default: 25
  smtp_security:
    description:
      - V(none) for plain SMTP, V(starttls) to upgrade the connection with STARTTLS (failing if the server cannot),
        V(tls) for implicit TLS.
    type: str
    choices: [none, starttls, tls]
    default: none
  smtp_user:
    description:
      - User name to log in to the SMTP server with; needs O(smtp_password).
      - If not set, the value of E(SCIDATA_SMTP_USER) is used.
    type: str
  smtp_password:
    description:
      - Password for O(smtp_user). Never logged or returned, and never sent without encryption except to a
        loopback address.
      - If not set, the value of E(SCIDATA_SMTP_PASSWORD) is used.
    type: str
  smtp_timeout:
    description:
      - Seconds to wait for the SMTP server.
    type: int
    default: 30
  smtp_validate_certs:
    description:
      - Verify the SMTP server's TLS certificate.
    type: bool
    default: true
  smtp_ca_path:
    description:
      - PEM file of CA certificates to verify the SMTP server's certificate with.
    type: path
requirements:
  - paramiko and Jinja2 on the target.
seealso:
  - module: scidata.replication.epn_rsync
  - module: ansible.builtin.known_hosts
author:
  - Scidata Replication maintainers (@scidata)
"""

EXAMPLES = r"""
- name: Alert the data managers about unknown EPNs (daily, from cron or AWX)
  scidata.replication.epn_alert:
    host: sftp.synchrotron.org.au
    user: massive
    key_file: /etc/scidata-replication/id_ed25519
    known_hosts_file: /etc/scidata-replication/known_hosts
    beamline: MX2
    epn_cap_map: "{{ epn_cap_map }}"
    portal_url: https://portal.synchrotron.org.au
    equipment:
      - id: "101"
        client_name: mx-client
        client_password: "{{ portal_client_password }}"
        username: mxuser
        password: "{{ portal_password }}"
    visit_day_range: 30
    mail_from: replication@example.org
    mail_to: [data-managers@example.org]
    smtp_host: smtp.example.org
    smtp_port: 587
    smtp_security: starttls
    smtp_user: replication
    smtp_password: "{{ smtp_password }}"

- name: Preview the alert without sending it
  scidata.replication.epn_alert:
    host: sftp.synchrotron.org.au
    user: massive
    known_hosts_file: /etc/scidata-replication/known_hosts
    epn_cap_map: "{{ epn_cap_map }}"
    mail_from: replication@example.org
    mail_to: [data-managers@example.org]
    template_html: /etc/scidata-replication/alert.html.j2
  check_mode: true
  register: preview
"""

RETURN = r"""
sent:
  description: Whether a mail was sent.
  returned: success
  type: bool
  sample: true
listed:
  description: Number of EPN folders seen on O(host).
  returned: success
  type: int
  sample: 214
unknown:
  description: Every EPN seen whose base number has no project in O(epn_cap_map).
  returned: success
  type: list
  elements: str
  sample: [12999a, 13001b]
alerted:
  description: The EPNs this run's mail was about (empty when nothing was sent, and in check mode).
  returned: success
  type: list
  elements: str
  sample: [13001b]
due:
  description: The unknown EPNs that were due for an alert (never alerted, or alerted O(realert_after_days) ago).
  returned: success
  type: list
  elements: str
  sample: [13001b]
suppressed:
  description: Unknown EPNs not alerted because they were alerted recently, with the time of that alert.
  returned: success
  type: list
  elements: dict
  sample: [{epn: 12999a, alerted_at: "2025-03-09T01:00:03+00:00"}]
portal_error:
  description: Why the facility portal could not be read (after its retries); the alert is then sent without visit
    details and says so. V(null) when the portal answered or was not queried.
  returned: success
  type: str
  sample: "cannot reach the facility portal at https://portal.example.org/api/v1/oauth/token: ... (after 4 attempts)"
rejected:
  description: Folder names refused by the EPN name rules (one that is not valid UTF-8 is shown with C(\xNN)
    escapes), with the reason.
  returned: success
  type: list
  elements: dict
  sample: [{epn: "-e sh", reason: "EPN starts with '-'"}]
refused_recipients:
  description: Recipients the SMTP server refused while accepting the mail for the others.
  returned: when a mail was sent
  type: list
  elements: str
  sample: []
message:
  description: The rendered mail.
  returned: when a mail was due (also in check mode)
  type: dict
  contains:
    subject:
      description: Subject.
      type: str
    from:
      description: Sender.
      type: str
    to:
      description: Recipients.
      type: list
      elements: str
    text:
      description: The text part.
      type: str
    html:
      description: The HTML part.
      type: str
  sample:
    subject: Unknown ownership of EPNs
    from: replication@example.org
    to: [data-managers@example.org]
    text: "1 EPN folder(s) on sftp.synchrotron.org.au:/data/MX2 have no project in epn_cap_map, ..."
    html: "<!DOCTYPE html>..."
msg:
  description: What happened.
  returned: always
  type: str
  sample: alert about 1 EPN(s) sent to data-managers@example.org
"""

import datetime
import time

from ansible.module_utils.basic import env_fallback
from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python

try:
    from ansible_collections.scidata.replication.plugins.module_utils._errors import PortalError
    from ansible_collections.scidata.replication.plugins.module_utils._epn import (
        PORTAL_ARGUMENT_SPEC,
        SSH_ARGUMENT_SPEC,
        epn_directory,
        fetch_visits,
        list_epn_folders,
        plan_alert,
        portal_clients_from_params,
        sftp_session_from_params,
    )
    from ansible_collections.scidata.replication.plugins.module_utils._epnsync import EpnStore
    from ansible_collections.scidata.replication.plugins.module_utils._mail import (
        DEFAULT_SMTP_TIMEOUT,
        DEFAULT_SUBJECT,
        SECURITY_CHOICES,
        build_message,
        now_text,
        read_template,
        render_alert,
        send_message,
        table_rows,
    )
    from ansible_collections.scidata.replication.plugins.module_utils._module import ReplicationModule
except SyntaxError:
    # A Python too old to compile the collection's code gets the same clear refusal as one that can.
    refuse_unsupported_python()
    raise


def alert(module):
    p = module.params
    directory = epn_directory(p["src_prefix"], p.get("beamline"))
    with sftp_session_from_params(p) as sftp:
        listed, rejected = list_epn_folders(sftp, directory, p["epn_pattern"])

    visits = []
    portal_error = None
    if p.get("equipment"):
        now_dt = datetime.datetime.now(datetime.timezone.utc)
        clients = portal_clients_from_params(p, warn=module.warn)
        try:
            visits = fetch_visits(clients, now_dt - datetime.timedelta(days=p["visit_day_range"]), now_dt)
        except PortalError as exc:
            # The alert matters more than its details: send it, saying they are missing.
            portal_error = exc.msg
            module.warn("the alert goes out without visit details: %s" % exc.msg)

    store = EpnStore(module.state())
    now = time.time()
    plan = plan_alert(listed, p["epn_cap_map"], visits, store.alerted(listed), now, p["realert_after_days"])
    result = dict(changed=False, sent=False, listed=len(listed), unknown=plan["unknown"], due=plan["due"],
                  alerted=[], suppressed=plan["suppressed"], rejected=rejected, portal_error=portal_error)
    if not plan["due"]:
        result["msg"] = "no unknown EPN is due for an alert (%d unknown, %d alerted recently)" % (
            len(plan["unknown"]), len(plan["suppressed"]))
        return result

    context = dict(
        with_details=plan["with_details"],
        without_details=plan["without_details"],
        without_details_rows=table_rows(plan["without_details"]),
        unknown_count=len(plan["due"]),
        host=p["host"],
        directory=directory,
        visit_day_range=p["visit_day_range"],
        subject=p["subject"],
        generated_at=now_text(),
        portal_error=portal_error,
    )
    text_template = read_template(p["template_text"], "template_text") if p.get("template_text") else None
    html_template = read_template(p["template_html"], "template_html") if p.get("template_html") else None
    text, html = render_alert(context, text_template, html_template)
    message = build_message(p["subject"], p["mail_from"], p["mail_to"], text, html)
    result["message"] = {"subject": p["subject"], "from": p["mail_from"], "to": p["mail_to"], "text": text,
                         "html": html}
    if module.check_mode:
        result.update(changed=True, msg="check mode: would send an alert about %d EPN(s)" % len(plan["due"]))
        return result

    refused = send_message(
        message, p["smtp_host"], port=p["smtp_port"], security=p["smtp_security"], user=p.get("smtp_user"),
        password=p.get("smtp_password"), timeout=p["smtp_timeout"], validate_certs=p["smtp_validate_certs"],
        ca_path=p.get("smtp_ca_path"),
    )
    # Only now, with the mail accepted, is the alert recorded.
    store.mark_alerted(plan["due"], now)
    result.update(changed=True, sent=True, alerted=plan["due"], refused_recipients=refused,
                  msg="alert about %d EPN(s) sent to %s" % (len(plan["due"]), ", ".join(p["mail_to"])))
    return result


def main():
    argument_spec = dict(SSH_ARGUMENT_SPEC)
    argument_spec.update(PORTAL_ARGUMENT_SPEC)
    argument_spec.update(
        epn_cap_map=dict(type="dict", required=True),
        realert_after_days=dict(type="int", default=7),
        mail_to=dict(type="list", elements="str", required=True),
        mail_from=dict(type="str", required=True),
        subject=dict(type="str", default=DEFAULT_SUBJECT),
        template_text=dict(type="path"),
        template_html=dict(type="path"),
        smtp_host=dict(type="str", default="localhost"),
        smtp_port=dict(type="int", default=25),
        smtp_security=dict(type="str", default="none", choices=list(SECURITY_CHOICES)),
        smtp_user=dict(type="str", fallback=(env_fallback, ["SCIDATA_SMTP_USER"])),
        smtp_password=dict(type="str", no_log=True, fallback=(env_fallback, ["SCIDATA_SMTP_PASSWORD"])),
        smtp_timeout=dict(type="int", default=DEFAULT_SMTP_TIMEOUT),
        smtp_validate_certs=dict(type="bool", default=True),
        smtp_ca_path=dict(type="path"),
    )
    module = ReplicationModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        # portal_url may come from SCIDATA_PORTAL_URL on a host where the alert has no equipment.
        required_by={"equipment": "portal_url"},
        required_together=[("smtp_user", "smtp_password")],
    )
    module.run(alert, job="%s-%s" % (module.params["host"], module.params["state_db"]))


if __name__ == "__main__":
    main()
