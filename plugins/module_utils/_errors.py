# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""The collection's exception types.

Cores raise these; the module base turns any of them into one ``fail_json`` with the
``details`` merged into the result, so modules never scatter try/except.
"""

from __future__ import annotations


class ReplicationError(Exception):
    """Base class: ``msg`` is what the user reads, ``details`` go into the result."""

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


class ConfigError(ReplicationError):
    """Options that are individually valid but cannot work together."""


class StateError(ReplicationError):
    """The state database cannot be reached, migrated or written."""


class MissingLibraryError(ReplicationError):
    """A Python library the chosen feature needs is not importable on the target."""

    def __init__(self, library, pip_name, reason=None, exception=None):
        super().__init__("missing library " + library, library=library, pip_name=pip_name)
        self.library = library
        self.pip_name = pip_name
        self.reason = reason
        self.exception = exception


class GlobusError(ReplicationError):
    """A Globus API call failed: ``code``, ``http_status`` and ``request_id`` when known."""


class RsyncError(ReplicationError):
    """rsync or ssh could not be run, or failed in a way the exit-code policy calls fatal."""


class PortalError(ReplicationError):
    """The facility portal refused a login or a request."""


class MailError(ReplicationError):
    """A message could not be rendered or handed to the SMTP server."""
