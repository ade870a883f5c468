# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A standalone emulator of the Globus Transfer API v0.10 and the Globus Auth token endpoints.

It exists so that integration tests and demos can drive the *real* ``globus_sdk`` against a
service that behaves like Globus (tasks queue, run in the background, really copy local files,
record events, fail and pause) without network access or a Globus account.  Point the SDK at it
with ``GLOBUS_SDK_SERVICE_URL_TRANSFER`` and ``GLOBUS_SDK_SERVICE_URL_AUTH``; start it through
:class:`globus_emulator.harness.EmulatorProcess`.

The server side uses the Python standard library only, so it runs wherever the tests run.
"""

__version__ = "1.0.0"
