# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""The one refusal of a managed-host Python older than the collection supports.

Unlike the rest of the collection, this file compiles on every Python the oldest supported
ansible-core runs modules on (2.7, 3.6 and later): module files import it apart from the other
module_utils, which those Pythons cannot compile, and call it when that import fails.
"""

from __future__ import absolute_import, division, print_function

import sys

from ansible.module_utils.basic import AnsibleModule, _load_params

__metaclass__ = type

# Documented in the scidata.replication._attributes doc fragment (requirements).
MIN_PYTHON = (3, 9)


def refuse_unsupported_python():
    """Fail the module run, before it reads or touches anything, if this Python is older than MIN_PYTHON."""
    if sys.version_info >= MIN_PYTHON:
        return
    # The module's argument spec may not compile here, so which options are secret is unknown: every
    # given option is accepted as it is, nothing is logged, and no option value is echoed back.
    given = dict((name, dict(type="raw")) for name in _load_params() if not name.startswith("_ansible_"))
    AnsibleModule(argument_spec=given, supports_check_mode=True, no_log=True).fail_json(
        msg="scidata.replication needs Python %d.%d or later on the managed host; %s is Python %s. Set "
            "ansible_python_interpreter to a newer Python." % (MIN_PYTHON + (sys.executable, sys.version.split()[0])),
        invocation=dict(module_args={}))
