# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""The one module base: shared options, the run lock, one error report, the run log.

A module builds a ``ReplicationModule`` with its own argument spec, then calls
``module.run(work)`` where ``work(module)`` returns the result dict. Everything the
collection's cores raise is reported here once.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib, remove_values
from ansible_collections.scidata.replication.plugins.module_utils._errors import (
    MissingLibraryError,
    ReplicationError,
)
from ansible_collections.scidata.replication.plugins.module_utils._globus import AUTH_MODES, transfer_client
from ansible_collections.scidata.replication.plugins.module_utils._names import shown_data
from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python
from ansible_collections.scidata.replication.plugins.module_utils._state import open_state

DEFAULT_STATE_DB = "~/.local/state/scidata-replication/state.db"
DEFAULT_TOKEN_FILE = "~/.globus/scidata-replication/tokens.json"
LOCK_POLL_SECONDS = 0.2

# Documented in the scidata.replication._state doc fragment.
STATE_ARGUMENT_SPEC = dict(
    state_db=dict(type="str", default=DEFAULT_STATE_DB, fallback=(env_fallback, ["SCIDATA_STATE_DB"])),
    state_db_password=dict(type="str", no_log=True, fallback=(env_fallback, ["SCIDATA_STATE_DB_PASSWORD"])),
    lock_file=dict(type="path", fallback=(env_fallback, ["SCIDATA_LOCK_FILE"])),
    lock_timeout=dict(type="int", default=0),
    log_file=dict(type="path", fallback=(env_fallback, ["SCIDATA_LOG_FILE"])),
)


# Documented in the scidata.replication._globus doc fragment; names match the AWX credential type.
GLOBUS_ARGUMENT_SPEC = dict(
    auth_mode=dict(type="str", default="auto", choices=list(AUTH_MODES)),
    client_id=dict(type="str", fallback=(env_fallback, ["GLOBUS_CLIENT_ID"])),
    client_secret=dict(type="str", no_log=True, fallback=(env_fallback, ["GLOBUS_CLIENT_SECRET"])),
    access_token=dict(type="str", no_log=True, fallback=(env_fallback, ["GLOBUS_ACCESS_TOKEN"])),
    token_file=dict(type="path", default=DEFAULT_TOKEN_FILE, fallback=(env_fallback, ["GLOBUS_TOKEN_FILE"])),
    data_access_collections=dict(type="list", elements="str", default=[]),
    max_retries=dict(type="int", default=5),
)


def default_lock_path(module_name, job=None):
    """Per-user lock directory; one lock file per module and job. Not XDG_RUNTIME_DIR: a login
    session has it and cron does not, and both must meet on the same lock."""
    base = os.path.join(os.path.expanduser("~"), ".cache")
    name = module_name if job is None else "%s-%s" % (module_name, "".join(c if c.isalnum() or c in "-_." else "_" for c in job))
    return os.path.join(base, "scidata-replication", "locks", name + ".lock")


@contextlib.contextmanager
def file_lock(path, timeout):
    """Yield True while holding an exclusive flock on ``path``, False if it stayed busy.

    flock is released by the kernel when the process dies, so a killed run never leaves a
    stale lock behind.
    """
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700)
    handle = open(path, "a")
    try:
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


class ReplicationModule(object):
    """Wraps ``AnsibleModule`` (composition, as amazon.aws does) with the collection's services."""

    def __init__(self, argument_spec, uses_state=True, uses_globus=False, **kwargs):
        refuse_unsupported_python()
        spec = dict(STATE_ARGUMENT_SPEC) if uses_state else {}
        if uses_globus:
            spec.update(GLOBUS_ARGUMENT_SPEC)
        spec.update(argument_spec)
        self.ansible = AnsibleModule(argument_spec=spec, **kwargs)
        self.params = self.ansible.params
        self.check_mode = self.ansible.check_mode
        self.diff_mode = self.ansible._diff
        self.name = self.ansible._name.rsplit(".", 1)[-1]
        self._state = None

    def state(self):
        """The state database, opened once; in check mode it is never created or migrated."""
        if self._state is None:
            self._state = open_state(
                self.params["state_db"], password=self.params["state_db_password"], check_mode=self.check_mode
            )
        return self._state

    def transfer_client(self):
        """An authenticated Globus TransferClient built from the shared Globus options."""
        return transfer_client(self.params)

    def warn(self, message):
        self.ansible.warn(shown_data(message))

    def run(self, work, job=None, lock=True):
        """Run ``work(self)`` under the job's run lock and exit with its result."""
        try:
            if lock and "lock_file" in self.params:
                path = self.params["lock_file"] or default_lock_path(self.name, job)
                with file_lock(path, self.params["lock_timeout"]) as acquired:
                    if acquired:
                        result = work(self)
                    else:
                        result = dict(
                            changed=False,
                            locked=True,
                            msg="another run holds the lock %s; nothing was done (raise lock_timeout to wait)" % path,
                        )
            else:
                result = work(self)
        except MissingLibraryError as exc:
            self._fail(
                dict(msg="%s Install it with: pip install %s" % (
                    missing_required_lib(exc.library, reason=exc.reason), exc.pip_name)),
                exception=exc.exception,
            )
        except ReplicationError as exc:
            self._fail(dict(exc.details, msg=exc.msg), exception=traceback.format_exc())
        except OSError as exc:
            self._fail(dict(msg="%s: %s" % (exc.__class__.__name__, exc)), exception=traceback.format_exc())
        except Exception as exc:  # pylint: disable=broad-except
            # A defect or an unforeseen library error: still one clear failure and a run-log line.
            self._fail(dict(msg="%s stopped on an unexpected error: %s: %s" % (self.name, exc.__class__.__name__, exc)),
                       exception=traceback.format_exc())
        finally:
            self._close()
        result = shown_data(result)
        self._log(result)
        self.ansible.exit_json(**result)

    def _fail(self, result, exception):
        result = shown_data(result)
        self._log(dict(result, failed=True))
        if exception is not None and not isinstance(exception, str):
            exception = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        self.ansible.fail_json(exception=shown_data(exception), **result)

    def _close(self):
        if self._state is not None:
            self._state.close()
            self._state = None

    def _log(self, result):
        """Append one JSON line per run to ``log_file``, with every no_log value masked."""
        self.log_event(dict((k, v) for k, v in result.items() if k != "diff"))

    def log_event(self, event):
        """Append ``event`` as one JSON line to ``log_file``: no_log values masked, names shown escaped."""
        path = self.params.get("log_file")  # absent when the module has no state options
        if not path:
            return
        entry = dict(remove_values(shown_data(event), self.ansible.no_log_values))
        entry.update(
            time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            module=self.name,
            check_mode=self.check_mode,
        )
        try:
            parent = os.path.dirname(path)
            if parent and not os.path.isdir(parent):
                os.makedirs(parent, mode=0o750)
            with open(path, "a") as handle:
                handle.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        except OSError as exc:
            self.ansible.warn("cannot write log_file %s: %s" % (path, exc))
