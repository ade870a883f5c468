# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How rsync failures that say nothing about the EPN are classified."""

from __future__ import annotations

from ansible_collections.scidata.replication.plugins.module_utils._rsync import resolve_exit_code


def test_rsync_killed_by_a_signal_is_retried_per_policy():
    first = resolve_exit_code(-9, 1, max_attempts=3)
    assert first["status"] == "retry" and first["meaning"] == "rsync was killed by SIGKILL"
    assert resolve_exit_code(-9, 3, max_attempts=3)["status"] == "failed"
    assert resolve_exit_code(137, 1)["status"] == "fatal"  # an exit code, not a signal
