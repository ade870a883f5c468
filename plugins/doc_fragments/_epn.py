# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.

from __future__ import annotations


class ModuleDocFragment(object):
    # Where the EPN folders are and how to reach them over SSH
    # (SSH_ARGUMENT_SPEC in plugins/module_utils/_epn.py).
    DOCUMENTATION = r"""
options:
  host:
    description:
      - The facility's SSH/SFTP server that holds the EPN folders.
    type: str
    required: true
  port:
    description:
      - SSH port of O(host).
    type: int
    default: 22
  user:
    description:
      - Login name on O(host).
    type: str
    required: true
  key_file:
    description:
      - Absolute path of the SSH private key to log in with (no passphrase; the run is unattended).
      - If not set, the SSH client's default keys and agent are used.
    type: path
  known_hosts_file:
    description:
      - The known_hosts file that holds the host key of O(host). Keep it managed, for example with
        M(ansible.builtin.known_hosts), after checking the key out of band.
      - Host keys are always checked strictly (C(StrictHostKeyChecking=yes) for ssh, C(RejectPolicy) for
        SFTP). An unknown or changed key stops the run with a clear error and is never added.
      - If not set, the user's C(~/.ssh/known_hosts) (and for ssh also the system-wide file) is used.
    type: path
  connect_timeout:
    description:
      - Seconds to wait for the SSH connection to be set up (C(ConnectTimeout)).
    type: int
    default: 30
  server_alive_interval:
    description:
      - Seconds between SSH keep-alive probes on an idle connection (C(ServerAliveInterval)).
    type: int
    default: 15
  server_alive_count_max:
    description:
      - Unanswered keep-alive probes after which ssh gives up on the connection (C(ServerAliveCountMax)).
    type: int
    default: 4
  src_prefix:
    description:
      - The folder on O(host) under which the beamline folders live.
    type: str
    default: /data
  beamline:
    description:
      - The beamline folder under O(src_prefix) that holds one folder per EPN (the layout since 2021 is
        C({src_prefix}/{beamline}/{epn}/)).
      - If not set, the EPN folders are looked for directly under O(src_prefix).
    type: str
  epn_pattern:
    description:
      - Regular expression an EPN name must match in full.
      - Whatever the pattern allows, a name that is empty, starts with C(-), contains C(..), C(/) or a control
        character, or is C(.) is rejected. Rejected names are listed in the result with the reason and never
        used in a path or command line.
    type: str
    default: "[A-Za-z0-9._-]+"
notes:
  - The EPN folder names come from the facility, so they are checked before any use; EPNs are mapped to project
    folders only through an explicit C(epn_cap_map), never guessed.
"""

    # The facility portal (PORTAL_ARGUMENT_SPEC in plugins/module_utils/_epn.py).
    PORTAL = r"""
options:
  portal_url:
    description:
      - Base URL of the facility portal API (the Australian Synchrotron portal), for example
        V(https://portal.synchrotron.org.au).
      - The module logs in with C(POST {portal_url}/api/v1/oauth/token) (password grant, HTTP basic client
        authentication) and reads C(GET {portal_url}/api/v1/equipment/{id}/visits); an expired token is renewed
        once.
      - If not set, the value of E(SCIDATA_PORTAL_URL) is used.
    type: str
    aliases: [base_url]
  equipment:
    description:
      - One entry per equipment (beamline instrument) whose visits are read, each with its own credentials, as
        in mxsync's C(equipment) list.
    type: list
    elements: dict
    suboptions:
      id:
        description: The portal's equipment id.
        type: str
        required: true
      client_name:
        description: API client name (HTTP basic user of the token request).
        type: str
        required: true
      client_password:
        description: API client password. Never logged or returned.
        type: str
        required: true
      username:
        description: Portal user name (password grant).
        type: str
        required: true
      password:
        description: Portal user password. Never logged or returned.
        type: str
        required: true
  validate_certs:
    description:
      - Verify the portal's TLS certificate. Turn off only for tests.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of CA certificates to verify the portal's certificate with, instead of the system store.
    type: path
  portal_timeout:
    description:
      - Seconds to wait for each portal request.
    type: int
    default: 30
  portal_retries:
    description:
      - How many times a portal request that got a 5xx answer or no connection is tried again before the module
        fails (or, for M(scidata.replication.epn_alert), sends the alert without visit details).
    type: int
    default: 3
  portal_retry_delay:
    description:
      - Seconds before the first retry of a portal request; the wait doubles with each retry, up to 30 seconds.
    type: int
    default: 2
  portal_allow_http:
    description:
      - Accept a plain C(http://) O(portal_url). The password grant then sends the portal passwords unencrypted,
        so this is refused unless set, and warned about when set. Only for test servers.
    type: bool
    default: false
  portal_timezone:
    description:
      - IANA time zone name (for example V(Australia/Melbourne)) in which portal times without a UTC offset are
        read. Times with an offset are read as given.
      - Set it to the facility's zone when its portal writes local times; read as UTC, a visit at a facility west
        of UTC would end too early and could be synced while it still runs.
    type: str
    default: UTC
  visit_day_range:
    description:
      - How many days back to look for visits.
    type: int
    default: 30
"""
