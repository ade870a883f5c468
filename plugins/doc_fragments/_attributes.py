# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.

from __future__ import annotations


class ModuleDocFragment(object):
    # The standard attribute descriptions; each module states its own support level.
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation
        indicates no change.
requirements:
  - Python 3.9 or later on the host that runs the module (older versions are refused with a clear message)
"""

    # For modules that only read.
    INFO_MODULE = r"""
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
"""

    # The module_defaults groups of meta/runtime.yml, one fragment per combination a module belongs to.
    ACTIONGROUP_STATE = r"""
attributes:
  action_group:
    description: In C(module_defaults), C(group/scidata.replication.state) sets the state database, lock and log options.
    support: full
    membership:
      - scidata.replication.state
"""

    # State and Globus options.
    ACTIONGROUP_STATE_GLOBUS = r"""
attributes:
  action_group:
    description:
      - In C(module_defaults), C(group/scidata.replication.state) sets the state database, lock and log options.
      - C(group/scidata.replication.globus) sets the Globus options.
    support: full
    membership:
      - scidata.replication.state
      - scidata.replication.globus
"""

    # State options and the facility's SSH connection.
    ACTIONGROUP_STATE_EPN = r"""
attributes:
  action_group:
    description:
      - In C(module_defaults), C(group/scidata.replication.state) sets the state database, lock and log options.
      - C(group/scidata.replication.epn) sets the facility SSH connection options.
    support: full
    membership:
      - scidata.replication.state
      - scidata.replication.epn
"""

    # Globus options only.
    ACTIONGROUP_GLOBUS = r"""
attributes:
  action_group:
    description: In C(module_defaults), C(group/scidata.replication.globus) sets the Globus options.
    support: full
    membership:
      - scidata.replication.globus
"""
