#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
module: globus_task_events
short_description: Refresh Globus task status and collect task events into the state database
version_added: 1.0.0
description:
  - Refreshes every unfinished task recorded in the state database with C(task_list) filtered by
    task id (up to 1000 tasks per request, never one request per task), and settles the items of
    tasks that finished (SUCCEEDED, or FAILED to be retried by M(scidata.replication.globus_transfer)).
    An INACTIVE task is not finished.
  - Collects each task's events into the database; re-ingesting adds nothing, and identical events
    in the same second are kept as separate rows. PROGRESS events are parsed into bytes, Mbps and
    duration. The service lists only the newest 1000 events of a task; a longer history is stored
    as far as it reaches and reported in RV(events_truncated).
  - Globus forgets a task's per-file history 30 days after it ends, so finished tasks are served
    first and tasks close to that age are reported in RV(history_expiring).
extends_documentation_fragment:
  - scidata.replication._globus
  - scidata.replication._state
  - scidata.replication._attributes
  - scidata.replication._attributes.actiongroup_state_globus
attributes:
  check_mode:
    support: full
    details:
      - Reads Globus and reports what would be stored; the state database is left as it was, and
        real runs sharing it are never held up while the check run pages through events.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A run reports a change when the state database changed.
options:
  routes:
    description: Only tasks of these routes (or dir_trie_sync jobs). Default is every task.
    type: list
    elements: str
    default: []
  task_ids:
    description: Only these tasks.
    type: list
    elements: str
    default: []
  max_tasks:
    description: At most this many tasks get their events collected in one run.
    type: int
    default: 100
  time_budget:
    description: Stop collecting events after this many seconds; the rest waits for the next run.
    type: int
    default: 300
  errors_only:
    description: Collect only error events (C(filter=is_error:1)).
    type: bool
    default: false
  task_files:
    description:
      - Also store, for each finished task, the files it transferred and the files it skipped with
        the error (C(successful_transfers) and C(skipped_errors), fetched once the task is finished).
    type: bool
    default: false
seealso:
  - module: scidata.replication.globus_transfer
author:
  - Scidata Replication maintainers (@scidata)
"""

EXAMPLES = r"""
- name: Collect status and events every ten minutes (cron or a systemd timer runs this play)
  scidata.replication.globus_task_events:
    state_db: /var/lib/scidata-replication/state.db

- name: Only the ESGF routes, at most two minutes of event collection
  scidata.replication.globus_task_events:
    routes: [llnl-alcf, llnl-olcf]
    time_budget: 120
"""

RETURN = r"""
refreshed:
  description: Unfinished tasks whose status was read.
  returned: success
  type: int
open_tasks:
  description: Tasks still unfinished after the refresh; use it to wait for a run's tasks (C(until)).
  returned: success
  type: int
status_changes:
  description:
    - Tasks whose status or pause state changed, with the new status.
    - C(LOST) means the service no longer shows the task to these credentials (a 404 when asked by
      id). It stops counting against O(scidata.replication.globus_transfer#module:max_active_tasks),
      a warning says so, and its items are retried by M(scidata.replication.globus_transfer) with
      C(sync_level=checksum).
  returned: success
  type: dict
  sample: {"5a3f2a1e-0000-4000-8000-000000000001": SUCCEEDED}
events_added:
  description: Events stored by this run.
  returned: success
  type: int
task_files_added:
  description: Transferred and skipped files stored by this run (with O(task_files)).
  returned: success
  type: int
tasks_completed:
  description: Finished tasks whose events are now all stored.
  returned: success
  type: list
  elements: str
pending:
  description: Tasks whose events wait for a later run (time budget or O(max_tasks)).
  returned: success
  type: int
history_expiring:
  description: Finished tasks close to the 30 days after which Globus deletes their history.
  returned: success
  type: list
  elements: str
events_truncated:
  description:
    - Tasks with more events than the service lists (it gives the newest 1000 only). What it
      gives is stored and the task is marked C(events_truncated) in the state database; the run
      does not fail.
  returned: success
  type: list
  elements: str
fetch_failed:
  description:
    - Tasks whose events or files could not be fetched in this run, each with C(task_id),
      C(error) and C(retry_in) (seconds). They are tried again after that backoff, doubling up
      to an hour; the other tasks are collected as usual.
  returned: success
  type: list
  elements: dict
"""

import time

from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python

try:
    from ansible_collections.scidata.replication.plugins.module_utils import _transfers
    from ansible_collections.scidata.replication.plugins.module_utils._errors import GlobusError
    from ansible_collections.scidata.replication.plugins.module_utils._module import ReplicationModule
except SyntaxError:
    # A Python too old to compile the collection's code gets the same clear refusal as one that can.
    refuse_unsupported_python()
    raise


def collect(module):
    db = module.state()
    client = module.transfer_client()
    return collect_events(module.params, db, client, module.warn)


def collect_events(params, db, client, warn):
    started = time.monotonic()
    jobs, task_ids = params["routes"], params["task_ids"]
    open_ids = _transfers.open_task_ids(db, jobs=jobs, task_ids=task_ids)
    changes = _transfers.refresh_tasks(db, client, open_ids)
    for task_id in sorted(t for t, status in changes.items() if status == "LOST"):
        warn(_transfers.lost_message(task_id))
    now = time.time()
    candidates = _transfers.tasks_needing_events(db, now, jobs=jobs, task_ids=task_ids)
    added, files_added, completed, expiring, truncated, failed, done = 0, 0, [], [], [], [], 0
    for task in candidates[:params["max_tasks"]]:
        if time.monotonic() - started > params["time_budget"]:
            break
        done += 1
        try:
            new, cut = _transfers.ingest_events(db, client, task["task_id"], errors_only=params["errors_only"])
            if task["status"] in _transfers.TERMINAL_TASK_STATUSES and not params["errors_only"] and params["task_files"]:
                files_added += _transfers.ingest_task_files(db, client, task["task_id"])
        except GlobusError as exc:
            wait = _transfers.fetch_failed(db, task["task_id"], exc.msg, now)
            failed.append(dict(task_id=task["task_id"], error=exc.msg, retry_in=wait))
            warn("task %s: its events or files cannot be fetched, next try in %d s: %s" % (task["task_id"], wait, exc.msg))
            continue
        added += new
        if cut:
            truncated.append(task["task_id"])
        if task["status"] in _transfers.TERMINAL_TASK_STATUSES and not params["errors_only"]:
            _transfers.mark_events_complete(db, task["task_id"])
            completed.append(task["task_id"])
        if _transfers.history_expiring(task["completion_time"], now):
            expiring.append(task["task_id"])
    still_open = len(_transfers.open_task_ids(db, jobs=jobs, task_ids=task_ids))
    return dict(changed=bool(changes or added or completed or failed), refreshed=len(open_ids), open_tasks=still_open,
                status_changes=changes, task_files_added=files_added,
                events_added=added, tasks_completed=completed, pending=len(candidates) - done,
                history_expiring=expiring, events_truncated=truncated, fetch_failed=failed)


def main():
    module = ReplicationModule(
        argument_spec=dict(
            routes=dict(type="list", elements="str", default=[]),
            task_ids=dict(type="list", elements="str", default=[]),
            max_tasks=dict(type="int", default=100),
            time_budget=dict(type="int", default=300),
            errors_only=dict(type="bool", default=False),
            task_files=dict(type="bool", default=False),
        ),
        uses_globus=True,
        supports_check_mode=True,
    )
    module.run(collect, job="+".join(sorted(module.params["routes"])) or "all")


if __name__ == "__main__":
    main()
