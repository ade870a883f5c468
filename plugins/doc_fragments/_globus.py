# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.

from __future__ import annotations


class ModuleDocFragment(object):
    # The Globus connection options every Globus module gets from the module base.
    DOCUMENTATION = r"""
options:
  auth_mode:
    description:
      - How to authenticate to Globus.
      - V(client_credentials) uses a confidential app (O(client_id) and O(client_secret)), the choice
        for cron, systemd timers and AWX.
      - V(refresh_token) uses a native app O(client_id) and the tokens that
        M(scidata.replication.globus_login) stored in O(token_file).
      - V(access_token) uses O(access_token) as given, for short interactive runs.
      - V(auto) picks the first of V(access_token), V(client_credentials), V(refresh_token) whose
        options are set.
    type: str
    choices: [auto, client_credentials, refresh_token, access_token]
    default: auto
  client_id:
    description:
      - The Globus Auth client id of a confidential app or, with O(auth_mode=refresh_token), of a
        native app.
      - If not set, the value of E(GLOBUS_CLIENT_ID) is used.
    type: str
  client_secret:
    description:
      - The confidential app's secret.
      - If not set, the value of E(GLOBUS_CLIENT_SECRET) is used.
    type: str
  access_token:
    description:
      - A Globus Transfer access token used as is.
      - If not set, the value of E(GLOBUS_ACCESS_TOKEN) is used.
    type: str
  token_file:
    description:
      - The JSON token file (globus-sdk token storage) of a native-app login, created C(0600) in a
        C(0700) directory.
      - If not set, the value of E(GLOBUS_TOKEN_FILE) is used.
    type: path
    default: ~/.globus/scidata-replication/tokens.json
  data_access_collections:
    description:
      - Ids of Globus Connect Server v5 mapped collections that need C(data_access) consent; their
        scopes are requested as dependencies of the Transfer scope.
    type: list
    elements: str
    default: []
  max_retries:
    description:
      - How often a request is retried after HTTP 429, 5xx or a network error, with exponential
        backoff and C(Retry-After) honoured.
    type: int
    default: 5
notes:
  - The Globus SDK reads E(GLOBUS_SDK_ENVIRONMENT), E(GLOBUS_SDK_SERVICE_URL_TRANSFER) and
    E(GLOBUS_SDK_SERVICE_URL_AUTH) from the environment of the module; the test suite and
    C(make demo) use them to reach the bundled Transfer/Auth API emulator instead of Globus.
requirements:
  - globus-sdk >= 4.4.1, < 5 on the host that runs the module (C(pip install 'globus-sdk>=4.4.1,<5'))
"""
