#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
module: replication_report
short_description: Write the replication dashboard, a static site, from the state database
version_added: 1.0.0
description:
  - Reads the state database shared by the modules of this collection and writes a static web site
    into O(dest) that any web server can serve, for example the C(scidata.replication.dashboard) role.
  - C(index.html) shows the totals per route and per destination site (items done, active, failed,
    partial and pending; tasks; bytes and files transferred), a chart of the bytes transferred per hour
    and route, a chart of the active and failed tasks per hour, the recent tasks with a link to their
    page in the Globus web app, the failing items (C(FAILED) and C(PARTIAL)) with their last error and
    how many files a C(PARTIAL) item's task skipped, the EPN synchronisation status with the last
    rsync result, and the directory sync jobs.
  - What waits for the operator comes first, per route, with what it means and what to do, for C(PARTIAL)
    items (their task skipped files under them), C(INACTIVE) tasks (credentials or consent to renew
    with M(scidata.replication.globus_login)), C(LOST) tasks (no longer visible to these credentials)
    and C(REJECTED) requests (refused by Globus, listed with the service's message).
  - The same data is written as JSON, one file per dataset (C(summary.json), C(tasks.json),
    C(progress.json), C(items_failing.json), C(epns.json), C(jobs.json)), for other tools.
  - Charts are SVG drawn on the target by matplotlib and embedded in the page; the page loads nothing
    from the network and runs no script, so it works on hosts without internet access.
  - Everything is aggregated in the database (hour buckets included), so large histories stay fast.
  - The site is replaced atomically as a whole. O(dest) is a symbolic link, managed by this module,
    to a sibling directory C(.<name>.gen-XXXXXXXX) holding one complete generation of the site. A new
    generation is written and synced next to it, then a new link is renamed over O(dest) in one
    atomic C(rename), so a web server never sees a half-written site, and the previous generation
    is removed after the swap.
  - The time axis of the charts ends at the newest time recorded in the database, not at the time of
    the run, so an unchanged database gives byte-identical files and C(changed=false).
extends_documentation_fragment:
  - scidata.replication._state
  - scidata.replication._attributes
  - scidata.replication._attributes.actiongroup_state
attributes:
  check_mode:
    support: full
    details:
      - Renders the site and reports whether it differs from the one at O(dest); writes nothing and
        reads the state database inside a transaction that is rolled back.
  diff_mode:
    support: partial
    details:
      - Shows the difference of C(summary.json) only.
  idempotent:
    support: full
    details:
      - C(changed) is true only when the content of a file of the site changes.
options:
  dest:
    description:
      - Path the web server serves. This module makes it a symbolic link to the current generation.
      - If it exists as an empty directory it is replaced; a non-empty directory that this module did
        not write is refused, so that nothing is ever deleted by mistake.
      - The web server must follow symbolic links there (nginx does unless C(disable_symlinks) is set).
    type: path
    required: true
  title:
    description: Title of the page.
    type: str
    default: Replication status
  recent_tasks:
    description:
      - Number of tasks in the recent tasks table and C(tasks.json), newest first.
      - Requests Globus rejected (they never became tasks) are listed apart, up to the same number.
    type: int
    default: 50
  history_hours:
    description: Hours covered by the charts and C(progress.json), ending with the newest recorded hour.
    type: int
    default: 48
  max_rows:
    description:
      - Largest number of rows in the failing items and EPN tables and their JSON files. The totals
        always count everything.
    type: int
    default: 200
  globus_app_url:
    description:
      - Base URL of the Globus web app; each task links to C(<globus_app_url>/activity/<task_id>).
    type: str
    default: https://app.globus.org
requirements:
  - matplotlib >= 3.5 on the target (C(pip install matplotlib)), for the charts
  - jinja2 on the target (installed with ansible-core)
notes:
  - Files are written with mode C(0644) and the generation directory with C(0755), so a web server
    running as another user can read them.
  - Times on the page and in the JSON files are UTC.
seealso:
  - module: scidata.replication.globus_task_events
  - module: scidata.replication.globus_transfer
author:
  - Scidata Replication maintainers (@scidata)
"""

EXAMPLES = r"""
- name: Write the dashboard from the default SQLite state database
  scidata.replication.replication_report:
    dest: /var/www/replication

- name: Write it from PostgreSQL, with a week of history and a custom title
  scidata.replication.replication_report:
    state_db: postgresql://replication@db.example.org/replication
    dest: /srv/www/replication
    title: CMIP6 replication LLNL, ALCF, OLCF
    history_hours: 168
    recent_tasks: 100

- name: See whether the dashboard would change
  scidata.replication.replication_report:
    dest: /var/www/replication
  check_mode: true
  register: report
"""

RETURN = r"""
dest:
  description: The path served, a symbolic link to RV(generation).
  returned: success
  type: str
  sample: /var/www/replication
generation:
  description:
    - The directory holding the current site. In check mode, or when nothing changed, the existing
      one (none before the first run).
  returned: success
  type: str
  sample: /var/www/.replication.gen-k2j4x9ab
files:
  description: The files of the site.
  returned: success
  type: list
  elements: str
  sample: [index.html, items_failing.json, epns.json, jobs.json, progress.json, summary.json, tasks.json]
changed_files:
  description: Files whose content changed (or would change in check mode), including files removed.
  returned: success
  type: list
  elements: str
  sample: [index.html, progress.json, summary.json]
as_of:
  description: The newest time recorded in the state database (UTC), where the charts end; null when empty.
  returned: success
  type: str
  sample: "2026-05-01T09:58:00Z"
totals:
  description: The totals shown at the top of the page.
  returned: success
  type: dict
  sample:
    items_total: 400
    items_done: 180
    items_active: 30
    items_failed: 30
    items_partial: 2
    items_pending: 160
    tasks: 81
    tasks_active: 8
    tasks_paused: 4
    tasks_failed: 12
    tasks_inactive: 1
    tasks_lost: 0
    submissions_rejected: 1
    tasks_succeeded: 57
    bytes_transferred: 4812338000000
    files_transferred: 10235
    files_skipped: 0
    faults: 96
    epns: 14
    epns_synced: 8
    jobs: 2
  contains:
    items_total:
      description: Transfer items of all routes.
      type: int
    items_done:
      description: Items that SUCCEEDED.
      type: int
    items_active:
      description: Items in a running task.
      type: int
    items_failed:
      description: Items whose last task failed, was LOST or whose request was REJECTED.
      type: int
    items_partial:
      description: Items whose last task succeeded but skipped files under them.
      type: int
    items_pending:
      description: Items not sent yet.
      type: int
    tasks:
      description: Submitted Globus tasks.
      type: int
    tasks_active:
      description: Tasks ACTIVE or INACTIVE.
      type: int
    tasks_paused:
      description: Active tasks that are paused.
      type: int
    tasks_failed:
      description: Tasks that FAILED.
      type: int
    tasks_inactive:
      description: Tasks INACTIVE (waiting for credentials or consent).
      type: int
    tasks_lost:
      description: Tasks LOST (no longer visible to these credentials).
      type: int
    submissions_rejected:
      description: Requests Globus REJECTED (never sent again; not counted in RV(totals.tasks)).
      type: int
    tasks_succeeded:
      description: Tasks that SUCCEEDED.
      type: int
    bytes_transferred:
      description: Bytes transferred by all tasks.
      type: int
    files_transferred:
      description: Files transferred by all tasks.
      type: int
    files_skipped:
      description: Files skipped by all tasks.
      type: int
    faults:
      description: Faults of all tasks.
      type: int
    epns:
      description: EPNs known.
      type: int
    epns_synced:
      description: EPNs synced.
      type: int
    jobs:
      description: Directory sync jobs.
      type: int
locked:
  description: True when another run held the lock and nothing was done.
  returned: when another run holds the lock
  type: bool
"""

import os

from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python

try:
    from ansible_collections.scidata.replication.plugins.module_utils import _report
    from ansible_collections.scidata.replication.plugins.module_utils._module import ReplicationModule
except SyntaxError:
    # A Python too old to compile the collection's code gets the same clear refusal as one that can.
    refuse_unsupported_python()
    raise


def write_report(module):
    p = module.params
    dest = os.path.abspath(p["dest"])
    _report.task_url_prefix(p["globus_app_url"])  # refuse a bad URL before any work
    data = _report.collect(module.state(), title=p["title"], recent=p["recent_tasks"],
                           history_hours=p["history_hours"], max_rows=p["max_rows"])
    files = _report.render_site(data, p["globus_app_url"])
    before = _report.read_site(dest)
    changed_files = _report.changed_files(before, files)
    generation = os.path.realpath(dest) if before is not None else None
    if changed_files and not module.check_mode:
        generation = _report.publish_site(dest, files)
    summary = data["summary.json"]
    result = dict(changed=bool(changed_files), dest=dest, generation=generation, files=sorted(files),
                  changed_files=changed_files, as_of=summary["as_of"], totals=summary["totals"])
    if module.diff_mode:
        old = (before or {}).get("summary.json") or b""
        result["diff"] = dict(before=old.decode("utf-8", "replace"), after=files["summary.json"].decode("utf-8"),
                              before_header=os.path.join(dest, "summary.json"),
                              after_header=os.path.join(dest, "summary.json"))
    return result


def main():
    module = ReplicationModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            title=dict(type="str", default="Replication status"),
            recent_tasks=dict(type="int", default=50),
            history_hours=dict(type="int", default=48),
            max_rows=dict(type="int", default=200),
            globus_app_url=dict(type="str", default="https://app.globus.org"),
        ),
        supports_check_mode=True,
    )
    module.run(write_report, job=os.path.abspath(module.params["dest"]))


if __name__ == "__main__":
    main()
