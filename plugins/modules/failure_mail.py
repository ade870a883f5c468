#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
module: failure_mail
short_description: Mail the failure of a replication job
version_added: 1.0.0
description:
  - Sends one plain-text mail through an SMTP server with the collection's own SMTP code, so that the job
    playbooks report their failures on a transfer host that has no other collection installed.
  - The rescue of every job playbook in C(playbooks/jobs/) uses it when C(scidata_job_mail.to) is set.
extends_documentation_fragment:
  - scidata.replication._attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports the mail it would send; sends nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every run sends a mail.
options:
  mail_to:
    description:
      - Recipient addresses.
    type: list
    elements: str
    required: true
  mail_from:
    description:
      - Sender address.
    type: str
    required: true
  subject:
    description:
      - Subject of the mail, one line.
    type: str
    required: true
  body:
    description:
      - Text of the mail.
    type: str
    required: true
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
      - If not set, the value of E(SCIDATA_SMTP_USER) is used. Empty means no login.
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
author:
  - Scidata Replication maintainers (@scidata)
"""

EXAMPLES = r"""
- name: Mail the failure of a job
  scidata.replication.failure_mail:
    mail_to: [ops@example.org]
    mail_from: scidata-replication@transfer1.example.org
    subject: "[scidata.replication] job nightly failed on transfer1"
    body: "The job nightly failed: {{ ansible_failed_result.msg }}"
    smtp_host: smtp.example.org
    smtp_port: 587
    smtp_security: starttls
"""

RETURN = r"""
sent:
  description: Whether the SMTP server accepted the mail (false in check mode).
  returned: always
  type: bool
  sample: true
refused_recipients:
  description: Recipients the SMTP server refused while accepting the mail for the others.
  returned: when sent
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import env_fallback
from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python

try:
    from ansible_collections.scidata.replication.plugins.module_utils._mail import (
        DEFAULT_SMTP_TIMEOUT,
        SECURITY_CHOICES,
        build_message,
        send_message,
    )
    from ansible_collections.scidata.replication.plugins.module_utils._module import ReplicationModule
except SyntaxError:
    # A Python too old to compile the collection's code gets the same clear refusal as one that can.
    refuse_unsupported_python()
    raise


def send(module):
    p = module.params
    recipients = ", ".join(p["mail_to"])
    if module.check_mode:
        return dict(changed=True, sent=False, msg="check mode: would mail %s" % recipients)
    message = build_message(" ".join(p["subject"].split()), p["mail_from"], p["mail_to"], p["body"])
    refused = send_message(message, p["smtp_host"], port=p["smtp_port"], security=p["smtp_security"],
                           user=p.get("smtp_user") or None, password=p.get("smtp_password") or None,
                           timeout=p["smtp_timeout"])
    return dict(changed=True, sent=True, refused_recipients=refused, msg="mailed %s" % recipients)


def main():
    module = ReplicationModule(
        argument_spec=dict(
            mail_to=dict(type="list", elements="str", required=True),
            mail_from=dict(type="str", required=True),
            subject=dict(type="str", required=True),
            body=dict(type="str", required=True),
            smtp_host=dict(type="str", default="localhost"),
            smtp_port=dict(type="int", default=25),
            smtp_security=dict(type="str", default="none", choices=list(SECURITY_CHOICES)),
            smtp_user=dict(type="str", fallback=(env_fallback, ["SCIDATA_SMTP_USER"])),
            smtp_password=dict(type="str", no_log=True, fallback=(env_fallback, ["SCIDATA_SMTP_PASSWORD"])),
            smtp_timeout=dict(type="int", default=DEFAULT_SMTP_TIMEOUT),
        ),
        uses_state=False,
        supports_check_mode=True,
        required_together=[("smtp_user", "smtp_password")],
    )
    module.run(send, lock=False)


if __name__ == "__main__":
    main()
