# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.

from __future__ import annotations


class ModuleDocFragment(object):
    # The Globus TransferData options of every module that submits transfers
    # (TRANSFER_ARGUMENT_SPEC in plugins/module_utils/_transfers.py).
    DOCUMENTATION = r"""
options:
  sync_level:
    description:
      - How Globus decides whether a file that exists at the destination is sent again.
      - A retry of something that failed is always sent with V(checksum), because restarting a partial
        transfer at a weaker level can leave a corrupt file behind.
    type: str
    choices: [exists, size, mtime, checksum]
    default: mtime
  verify_checksum:
    description: Verify each file's checksum after transfer.
    type: bool
    default: true
  preserve_timestamp:
    description: Give destination files the source modification times.
    type: bool
    default: true
  encrypt_data:
    description: Encrypt the data channel.
    type: bool
    default: false
  deadline:
    description: ISO 8601 time after which Globus stops a task. Exclusive with O(time_limit).
    type: str
  time_limit:
    description: Minutes after submission after which Globus stops a task.
    type: int
  skip_source_errors:
    description: Skip source files that cannot be read instead of failing the task.
    type: bool
    default: false
  fail_on_quota_errors:
    description: Fail a task at once when the destination is over quota.
    type: bool
    default: true
  notify_on_succeeded:
    description: Ask Globus to e-mail the task owner on success.
    type: bool
    default: false
  notify_on_failed:
    description: Ask Globus to e-mail the task owner on failure.
    type: bool
    default: false
  notify_on_inactive:
    description: Ask Globus to e-mail the task owner when a task becomes inactive.
    type: bool
    default: false
"""

    # The one task budget of the Globus identity, shared by every module that submits tasks
    # (TASK_BUDGET_ARGUMENT_SPEC in plugins/module_utils/_transfers.py).
    TASK_BUDGET = r"""
options:
  identity_max_open_tasks:
    description:
      - Open (not finished) tasks allowed for the Globus identity, counted over every route, job and
        host that share O(state_db). Globus refuses new tasks from a user who has 100 unfinished ones.
      - Checked in the same database transaction that records a new task, so concurrent runs of this
        and the other submitting modules never exceed it together. What has no room stays pending
        for the next run, and the result says it waits for task budget.
    type: int
    default: 100
"""
