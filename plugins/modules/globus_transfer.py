#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
module: globus_transfer
short_description: Replicate lists of paths between Globus collections, tracking every item
version_added: 1.0.0
description:
  - Ensures that a set of source paths is replicated to one or more destination collections. Every
    (path, destination) pair is an item in the state database; a run registers new items, refreshes
    the status of the routes' open tasks, and submits new tasks within the limits of each route.
  - A C(route) goes from one source collection to one or more destinations. A route can take as its
    items what has SUCCEEDED on another route (O(routes[].source_route)), for example to exchange
    replicas between two sites, and can serve as an overflow used only while another route has a
    paused task (O(routes[].overflow_for)).
  - Failed items are resubmitted after an exponential backoff, with C(sync_level=checksum), until
    O(max_attempts) is reached; then they are reported in C(failed_items) of their route in RV(routes) and left alone.
  - When a failed task's error events name the file at fault (the C(File) line of their details, for the task's
    fatal error code), only the items holding those files are charged the attempt, with that error and path as
    C(last_error); the other items of the task are retried without using an attempt (C(last_error) starts with
    C(not charged)). When no event names a file, or the events cannot be read, every item of the task is charged.
  - An item is C(SUCCEEDED) only when its task succeeded and skipped no file under it; otherwise it is
    C(PARTIAL), reported with the skipped files in C(partial_items) of its route in RV(routes), and retried like a failed item.
  - Every task is submitted exactly once (its submission id is committed to the state database
    before the request), so a run killed at any point can simply be run again.
  - Runs may overlap (jobs with different lock files, or several hosts sharing a PostgreSQL state
    database). Items are claimed for a task in one short database transaction, so an item is never
    in two open tasks, and O(identity_max_open_tasks) holds across all of them.
  - Run M(scidata.replication.globus_task_events) on a schedule as well, to collect task events.
extends_documentation_fragment:
  - scidata.replication._globus
  - scidata.replication._state
  - scidata.replication._transfer_options
  - scidata.replication._transfer_options.task_budget
  - scidata.replication._attributes
  - scidata.replication._attributes.actiongroup_state_globus
attributes:
  check_mode:
    support: full
    details:
      - Reports exactly which items would go in which tasks; nothing is submitted and the state
        database is left as it was. The plan is made on a snapshot, so real runs sharing the state
        database are never held up by a check run.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A second run reports a change only when new items were registered or tasks submitted.
options:
  routes:
    description: The replication routes.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Unique route name; also the C(job) of its tasks in the state database.
        type: str
        required: true
      source_collection:
        description: The source collection id.
        type: str
        required: true
      source_prefix:
        description: Prefix on the source collection that item paths are relative to.
        type: str
        default: /
      destinations:
        description: Destination collections, each with the prefix that item paths go under.
        type: list
        elements: dict
        required: true
        suboptions:
          collection:
            description: The destination collection id.
            type: str
            required: true
          prefix:
            description: Prefix on the destination collection.
            type: str
            default: /
      items:
        description:
          - Paths (strings) or dicts with C(source), optional C(destination) (relative to the
            destination prefix) and C(recursive).
          - A path ending in C(/) is a directory.
        type: list
        elements: raw
        default: []
      items_from:
        description: A file with one path per line; blank lines and C(#) comments are skipped.
        type: path
      recursive:
        description:
          - Default for items that do not say. V(true) sends every item as a directory transfer.
          - Unset (or V(false)), the item leaves C(recursive) out of the request and Globus decides
            from what the path is; a path ending in C(/) is always sent as a directory.
        type: bool
      source_route:
        description:
          - Take as items what SUCCEEDED on this other route at O(routes[].source_collection), instead
            of O(routes[].items).
        type: str
      overflow_for:
        description: Submit on this route only while the named route has a paused task.
        type: str
      max_active_tasks:
        description: Overrides O(max_active_tasks) for this route.
        type: int
      items_per_task:
        description: Overrides O(items_per_task) for this route.
        type: int
      order:
        description:
          - Order in which pending items are sent, by source path. Give two routes from the same
            source opposite orders to work through a list from both ends.
        type: str
        choices: [asc, desc]
        default: asc
  max_active_tasks:
    description: Open tasks allowed per route (Globus runs 3 transfer tasks per user at once).
    type: int
    default: 3
  max_submissions_per_run:
    description: Tasks submitted per run across all routes.
    type: int
    default: 10
  items_per_task:
    description: Items carried by one task.
    type: int
    default: 1
  max_attempts:
    description: Attempts per item before it is reported as failed and no longer retried.
    type: int
    default: 5
  retry_backoff:
    description: Seconds to wait after the first failure of an item; doubled after each further one.
    type: int
    default: 600
  retry_backoff_max:
    description: The longest wait between attempts, in seconds.
    type: int
    default: 86400
  label:
    description:
      - Task label template with the fields C({route}), C({items}), C({first}) (base name of the first
        source path), C({date}) and C({attempt}).
      - A label longer than 128 characters or containing a line break is refused before any request.
    type: str
    default: "{route} {first}"
  filter_rules:
    description:
      - Globus filter rules for recursive items.
      - "For example C({method: exclude, type: file, name: '.*'}) skips hidden files."
    type: list
    elements: dict
    default: []
    suboptions:
      method:
        description: Include or exclude.
        type: str
        choices: [include, exclude]
        required: true
      type:
        description: What the rule applies to.
        type: str
        choices: [file, dir]
      name:
        description: Shell-style pattern matched against names.
        type: str
        required: true
  delete_destination_extra:
    description: Delete destination files that are not in the source (recursive items only).
    type: bool
    default: false
  delete_after_success:
    description:
      - Delete a source path (with a Globus delete task) once every item with that source, on every
        route, has SUCCEEDED, only if nothing under it was modified after its transfer started, and
        only if a listing of every destination shows each of its files there with the same size.
        Globus gives both times in whole seconds, so a change in the same second as the transfer request
        counts as after it and keeps the source.
      - Sources that are kept are reported with the reason in C(deletions.blocked) of their route in RV(routes).
    type: bool
    default: false
seealso:
  - module: scidata.replication.globus_task_events
  - module: scidata.replication.globus_collection_info
author:
  - Scidata Replication maintainers (@scidata)
"""

EXAMPLES = r"""
- name: Replicate the CMIP6 dataset list from LLNL to two sites, then exchange between them
  scidata.replication.globus_transfer:
    state_db: postgresql://replication@db.example.org/replication
    filter_rules:
      - {method: exclude, type: file, name: ".*"}
    routes:
      - name: llnl-alcf
        source_collection: 1889ea03-25ad-4f9f-8110-1ce8833a9d7e
        destinations: [{collection: 8896f38e-68d1-4708-bce4-b1b3a27405b8}]
        items_from: /etc/scidata-replication/paths/CMIP6-experiment_id
      - name: llnl-olcf
        source_collection: 1889ea03-25ad-4f9f-8110-1ce8833a9d7e
        destinations:
          - collection: ef1a9560-7ca1-11e5-992c-22000b96db58
            prefix: /gpfs/alpine/cli137/proj-shared/ESGF/esg_dataroot
        items_from: /etc/scidata-replication/paths/CMIP6-experiment_id
        order: desc
      - name: alcf-olcf
        source_collection: 8896f38e-68d1-4708-bce4-b1b3a27405b8
        source_route: llnl-alcf
        destinations:
          - collection: ef1a9560-7ca1-11e5-992c-22000b96db58
            prefix: /gpfs/alpine/cli137/proj-shared/ESGF/esg_dataroot

- name: See what the next run would submit
  scidata.replication.globus_transfer:
    routes: "{{ replication_routes }}"
  check_mode: true
  register: plan
"""

RETURN = r"""
routes:
  description: Per route, keyed by the route's name, what happened and where its items stand; each value holds the keys below.
  returned: success
  type: dict
  sample:
    llnl-alcf:
      registered: 2163
      counts: {PENDING: 2160, ACTIVE: 3, SUCCEEDED: 0, PARTIAL: 0, FAILED: 0}
      open_tasks: 3
      paused: false
      reason: null
      failed_items: []
      partial_items: []
      tasks_needing_attention: []
  contains:
    registered:
      description: Items added by this run.
      type: int
    counts:
      description: Items per status (C(PENDING), C(ACTIVE), C(SUCCEEDED), C(PARTIAL), C(FAILED)).
      type: dict
    open_tasks:
      description: Tasks of the route not yet finished.
      type: int
    paused:
      description: Whether a task of the route is paused (no new submission then).
      type: bool
    reason:
      description: Why nothing was submitted on the route, if so.
      type: str
    waiting_for_budget:
      description:
        - Whether the route had items to send but the identity had O(identity_max_open_tasks) open
          tasks already.
      type: bool
    failed_items:
      description:
        - Items that reached O(max_attempts) as C(FAILED) or C(PARTIAL); they are not retried.
        - Each has C(source), C(destination), C(attempts), C(status) and C(last_error).
      type: list
      elements: dict
    partial_items:
      description:
        - Items whose last task succeeded but skipped files under them (O(skip_source_errors)).
          They are retried like failed items and their sources are never deleted.
        - Each has C(source), C(destination), C(attempts) and C(skipped), the skipped files with
          C(path) and C(error_code).
      type: list
      elements: dict
    tasks_needing_attention:
      description:
        - Open tasks of the route that wait for someone, each with C(task_id), C(status) (C(INACTIVE)
          or C(PAUSED)), C(reason) and C(fix).
        - An INACTIVE task lost its credentials or consent; C(fix) names the login to run again. A
          paused task gives the message of the pause rule holding it.
      type: list
      elements: dict
    deletions:
      description:
        - With O(delete_after_success), the sources scheduled for deletion by this run, those kept
          (with the reason) and how many sources of the route are deleted so far.
      type: dict
      returned: when O(delete_after_success=true)
      contains:
        scheduled:
          description: Source paths a delete task was submitted for by this run.
          type: list
          elements: str
        blocked:
          description: Source paths kept, each with the C(reason).
          type: list
          elements: dict
        deleted:
          description: Source paths of the route deleted so far.
          type: int
tasks:
  description:
    - Tasks submitted by this run (in check mode, that would be submitted, with their paths).
    - A request Globus refused (a client error other than 401, 429 and 409 too many pending tasks)
      has C(code=Rejected), no C(task_id) and the service's message in C(error). It is never sent
      again; its items are marked C(FAILED) with that message and retried per O(max_attempts).
  returned: success
  type: list
  elements: dict
  sample:
    - {route: llnl-alcf, items: 1, task_id: 5a3f2a1e-0000-4000-8000-000000000001, code: Accepted,
       sync_level: mtime, label: "llnl-alcf CMIP6"}
task_budget:
  description: Open tasks of the Globus identity in the state database after this run, and the limit.
  returned: success
  type: dict
  sample: {open_tasks: 3, limit: 100}
  contains:
    open_tasks:
      description: Tasks of every route and job sharing the state database that are not finished.
      type: int
    limit:
      description: O(identity_max_open_tasks).
      type: int
resubmitted:
  description:
    - Submissions a previous run had persisted but not seen accepted, submitted again with the same id.
    - Network errors and 5xx answers keep a submission for the next run; a refused one is reported
      with C(code=Rejected) and C(error), as in RV(tasks).
  returned: success
  type: list
  elements: dict
"""

import time

from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python

try:
    from ansible_collections.scidata.replication.plugins.module_utils import _transfers
    from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError
    from ansible_collections.scidata.replication.plugins.module_utils._globus import (
        resubmit_unconfirmed,
        unconfirmed_submissions,
    )
    from ansible_collections.scidata.replication.plugins.module_utils._module import ReplicationModule
except SyntaxError:
    # A Python too old to compile the collection's code gets the same clear refusal as one that can.
    refuse_unsupported_python()
    raise

TRANSFER_OPTIONS = tuple(_transfers.TRANSFER_ARGUMENT_SPEC) + ("filter_rules", "delete_destination_extra")


def ordered_routes(routes):
    """Check the routes and order them so a chained route comes after its source route."""
    names = [r["name"] for r in routes]
    if len(set(names)) != len(names):
        raise ConfigError("route names must be unique: %s" % ", ".join(sorted(n for n in names if names.count(n) > 1)))
    by_name = dict((r["name"], r) for r in routes)
    for route in routes:
        for field in ("source_route", "overflow_for"):
            if route.get(field) and route[field] not in by_name:
                raise ConfigError("route %s: %s names an unknown route %s" % (route["name"], field, route[field]))
        if route.get("source_route") and (route.get("items") or route.get("items_from")):
            raise ConfigError("route %s: source_route and items/items_from exclude each other" % route["name"])
    ordered, seen = [], set()

    def visit(route, trail):
        if route["name"] in seen:
            return
        if route["name"] in trail:
            raise ConfigError("routes chain in a circle: %s" % " -> ".join(trail + [route["name"]]))
        if route.get("source_route"):
            visit(by_name[route["source_route"]], trail + [route["name"]])
        seen.add(route["name"])
        ordered.append(route)

    for route in routes:
        visit(route, [])
    return ordered


def replicate(module):
    params = module.params
    routes = ordered_routes(params["routes"])
    for route in routes:
        _transfers.check_label_template(params["label"], route["name"])
    db = module.state()
    client = module.transfer_client()
    return run_routes(module, db, client, routes)


def run_routes(module, db, client, routes):
    params = module.params
    now = time.time()
    names = [r["name"] for r in routes]
    options = dict((name, params[name]) for name in TRANSFER_OPTIONS)
    policy = dict((name, params[name]) for name in ("max_active_tasks", "identity_max_open_tasks", "items_per_task",
                                                    "max_attempts", "retry_backoff", "retry_backoff_max"))
    resubmitted = []
    for name in names:
        if module.check_mode:
            resubmitted.extend(dict(route=name, submission_id=s) for s in unconfirmed_submissions(db, name))
        else:
            resubmitted.extend(dict(r, route=name) for r in resubmit_unconfirmed(db, client, name,
                                                                                 on_rejected=_transfers.reject_items))
    changes = _transfers.refresh_tasks(db, client, _transfers.open_task_ids(db, jobs=names))
    for task_id in sorted(t for t, status in changes.items() if status == "LOST"):
        module.warn(_transfers.lost_message(task_id))

    report, tasks, submissions_left = {}, [], params["max_submissions_per_run"]
    for route in routes:
        rows = (_transfers.chained_rows(db, route, now) if route.get("source_route")
                else _transfers.item_rows(route, now))
        report[route["name"]] = dict(registered=_transfers.register_items(db, rows))
    for route in routes:
        batches, reason, waiting = _transfers.plan_route(db, route, policy, submissions_left, now)
        for destination, items in batches:
            if module.check_mode:
                tasks.append(_transfers.describe_batch(route, destination, items, options["sync_level"]))
            else:
                result, refused, budget_gone = _transfers.submit_batch(db, client, route, destination, items,
                                                                       options, params["label"], policy, now)
                if result is None:
                    # Another run took the items or the room since the plan; that run reports them.
                    reason, waiting = refused, budget_gone
                    if budget_gone:
                        break
                    continue
                tasks.append(result)
            submissions_left -= 1
        if params["delete_after_success"]:
            report[route["name"]]["deletions"] = delete_sources(module, db, client, route, tasks)
        open_tasks, paused = _transfers.route_task_state(db, route["name"])
        report[route["name"]].update(
            counts=_transfers.route_counts(db, route["name"]), open_tasks=open_tasks, paused=paused,
            reason=reason, waiting_for_budget=waiting,
            failed_items=_transfers.exhausted_items(db, route["name"], params["max_attempts"]),
            partial_items=_transfers.partial_items(db, route["name"]),
            tasks_needing_attention=_transfers.tasks_needing_attention(db, route["name"]))
    for rejected in (r for r in resubmitted + tasks if r.get("code") == "Rejected"):
        module.warn("route %s: Globus rejected submission %s, which is dropped and its items marked FAILED: %s"
                    % (rejected["route"], rejected["submission_id"], rejected["error"]))
    changed = bool(tasks or resubmitted or any(r["registered"] for r in report.values()))
    return dict(changed=changed, routes=report, tasks=tasks, resubmitted=resubmitted,
                task_budget=dict(open_tasks=_transfers.identity_open_tasks(db),
                                 limit=params["identity_max_open_tasks"]))


def delete_sources(module, db, client, route, tasks):
    """Delete replicated sources that were not modified since their transfer started."""
    allowed, blocked = _transfers.plan_deletions(db, client, route)
    paths = [row["source_path"] for row in allowed]
    if allowed:
        label = _transfers.render_label("{route} delete {items} source paths", route=route["name"], items=len(allowed),
                                        first="", date="", attempt=1)
        if module.check_mode:
            tasks.append(dict(route=route["name"], kind="delete", items=len(paths), paths=paths))
        else:
            tasks.append(dict(_transfers.submit_deletion(db, client, route, allowed, label), route=route["name"],
                              kind="delete", items=len(paths)))
    deleted = db.scalar("SELECT count(DISTINCT source_path) FROM transfer_items WHERE route = ? "
                        "AND source_deleted_at IS NOT NULL", (route["name"],))
    return dict(scheduled=paths, blocked=blocked, deleted=int(deleted or 0))


def main():
    module = ReplicationModule(
        argument_spec=dict(
            routes=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                source_collection=dict(type="str", required=True),
                source_prefix=dict(type="str", default="/"),
                destinations=dict(type="list", elements="dict", required=True, options=dict(
                    collection=dict(type="str", required=True),
                    prefix=dict(type="str", default="/"),
                )),
                items=dict(type="list", elements="raw", default=[]),
                items_from=dict(type="path"),
                recursive=dict(type="bool"),
                source_route=dict(type="str"),
                overflow_for=dict(type="str"),
                max_active_tasks=dict(type="int"),
                items_per_task=dict(type="int"),
                order=dict(type="str", default="asc", choices=["asc", "desc"]),
            )),
            max_active_tasks=dict(type="int", default=3),
            max_submissions_per_run=dict(type="int", default=10),
            items_per_task=dict(type="int", default=1),
            max_attempts=dict(type="int", default=5),
            retry_backoff=dict(type="int", default=600),
            retry_backoff_max=dict(type="int", default=86400),
            label=dict(type="str", default="{route} {first}"),
            filter_rules=dict(type="list", elements="dict", default=[], options=dict(
                method=dict(type="str", required=True, choices=["include", "exclude"]),
                type=dict(type="str", choices=["file", "dir"]),
                name=dict(type="str", required=True),
            )),
            delete_destination_extra=dict(type="bool", default=False),
            delete_after_success=dict(type="bool", default=False),
            # One unpacking: a module must still compile on the old Pythons it refuses (see _python_floor).
            **dict(_transfers.TRANSFER_ARGUMENT_SPEC, **_transfers.TASK_BUDGET_ARGUMENT_SPEC)
        ),
        uses_globus=True,
        mutually_exclusive=_transfers.TRANSFER_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    module.run(replicate, job="+".join(sorted(r["name"] for r in module.params["routes"])))


if __name__ == "__main__":
    main()
