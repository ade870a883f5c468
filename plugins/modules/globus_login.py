#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
module: globus_login
short_description: Log a native Globus app in once and keep its refresh token for unattended runs
version_added: 1.0.0
description:
  - The one-time native-app login, without a terminal prompt inside the module.
  - Without O(auth_code), returns the RV(authorize_url) to open in a browser (C(changed=false)).
    The PKCE verifier of that login is kept next to O(token_file) until the code is exchanged.
  - With O(auth_code), exchanges the code and writes the tokens to O(token_file) (C(changed=true)).
  - When O(token_file) already holds a refresh token for the requested scopes, nothing is done.
  - With O(state=absent), revokes the stored tokens and removes the file.
  - C(playbooks/globus_login.yml) in this collection shows the URL and asks for the code with
    M(ansible.builtin.pause).
extends_documentation_fragment:
  - scidata.replication._attributes
attributes:
  check_mode:
    support: full
    details:
      - An authorization code is single-use, so check mode never exchanges it; it reports the change.
      - Check mode writes nothing, neither the token directory nor the waiting login; it returns the
        RV(authorize_url) of a login a real run already started, else none.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  client_id:
    description:
      - The native app's Globus Auth client id.
      - If not set, the value of E(GLOBUS_CLIENT_ID) is used.
    type: str
    required: true
  token_file:
    description:
      - Where the tokens are kept (globus-sdk JSON token storage), created C(0600) in a C(0700) directory.
      - If not set, the value of E(GLOBUS_TOKEN_FILE) is used.
    type: path
    default: ~/.globus/scidata-replication/tokens.json
  auth_code:
    description:
      - The authorization code shown by Globus after logging in at RV(authorize_url).
    type: str
  data_access_collections:
    description:
      - Ids of Globus Connect Server v5 mapped collections that need C(data_access) consent; the
        login asks for it.
    type: list
    elements: str
    default: []
  state:
    description:
      - V(present) logs in (or reports the URL to log in); V(absent) revokes and removes the tokens.
    type: str
    choices: [present, absent]
    default: present
  max_retries:
    description: How often a request to Globus Auth is retried after HTTP 429, 5xx or a network error.
    type: int
    default: 5
notes:
  - The Globus SDK reads E(GLOBUS_SDK_ENVIRONMENT) and E(GLOBUS_SDK_SERVICE_URL_AUTH) from the
    environment of the module.
requirements:
  - globus-sdk >= 4.4.1, < 5 (C(pip install 'globus-sdk>=4.4.1,<5'))
seealso:
  - module: scidata.replication.globus_collection_info
author:
  - Scidata Replication maintainers (@scidata)
"""

EXAMPLES = r"""
- name: Get the URL to log in at
  scidata.replication.globus_login:
    client_id: 5f1e4c2a-8a83-4c7f-9a5b-3c1c2f0d9e11
  register: login

- name: Ask for the code
  ansible.builtin.pause:
    prompt: "Log in at {{ login.authorize_url }} and paste the code"
  register: code
  when: login.authorize_url is defined

- name: Store the tokens
  scidata.replication.globus_login:
    client_id: 5f1e4c2a-8a83-4c7f-9a5b-3c1c2f0d9e11
    auth_code: "{{ code.user_input }}"
  when: login.authorize_url is defined

- name: Log out, revoking the stored tokens
  scidata.replication.globus_login:
    client_id: 5f1e4c2a-8a83-4c7f-9a5b-3c1c2f0d9e11
    state: absent
"""

RETURN = r"""
authorize_url:
  description:
    - The URL to log in at; open it in a browser and pass the code shown as O(auth_code).
    - V(null) in check mode until a real run has started the login.
  returned: when a login is needed and O(auth_code) is not given
  type: str
logged_in:
  description: Whether O(token_file) holds a refresh token for the requested scopes after the run.
  returned: success
  type: bool
token_file:
  description: The token file.
  returned: success
  type: str
scopes:
  description: The scopes requested.
  returned: success
  type: str
"""

from ansible.module_utils.basic import env_fallback
from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python

try:
    from ansible_collections.scidata.replication.plugins.module_utils._globus import NativeLogin
    from ansible_collections.scidata.replication.plugins.module_utils._module import (
        DEFAULT_TOKEN_FILE,
        ReplicationModule,
    )
except SyntaxError:
    # A Python too old to compile the collection's code gets the same clear refusal as one that can.
    refuse_unsupported_python()
    raise


def login(module):
    params = module.params
    native = NativeLogin(params["client_id"], params["token_file"], params["data_access_collections"],
                         params["max_retries"])
    result = dict(changed=False, token_file=params["token_file"], scopes=native.scopes)
    if params["state"] == "absent":
        result.update(changed=native.has_tokens(), logged_in=False)
        if native.has_tokens() and not module.check_mode:
            native.logout()
        return result
    if native.has_tokens():
        return dict(result, logged_in=True)
    if not params["auth_code"]:
        url = native.authorize_url(persist=not module.check_mode)
        if url is None:
            return dict(result, logged_in=False, authorize_url=None,
                        msg="a run without check mode starts the login and returns its authorize_url")
        return dict(result, logged_in=False, authorize_url=url,
                    msg="log in at authorize_url, then run again with auth_code")
    if not module.check_mode:
        native.exchange(params["auth_code"])
    return dict(result, changed=True, logged_in=True)


def main():
    module = ReplicationModule(
        argument_spec=dict(
            client_id=dict(type="str", required=True, fallback=(env_fallback, ["GLOBUS_CLIENT_ID"])),
            token_file=dict(type="path", default=DEFAULT_TOKEN_FILE, fallback=(env_fallback, ["GLOBUS_TOKEN_FILE"])),
            auth_code=dict(type="str", no_log=True),
            data_access_collections=dict(type="list", elements="str", default=[]),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            max_retries=dict(type="int", default=5),
        ),
        uses_state=False,
        supports_check_mode=True,
    )
    module.run(login, lock=False)


if __name__ == "__main__":
    main()
