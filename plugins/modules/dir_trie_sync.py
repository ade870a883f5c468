#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
module: dir_trie_sync
short_description: Replicate a growing directory tree through Globus, sending only what is new or changed
version_added: 1.0.0
description:
  - Runs on the host that holds the source tree, on a schedule. Each run scans O(src_dir) directory
    by directory, compares every file with a compact per-job index, and submits Globus transfer
    tasks for the files that are new or changed, one item per file, to every destination.
  - "Every run does, in order: (1) settle the job's earlier tasks: a task that SUCCEEDED marks exactly
    the file versions it carried as transferred, one that FAILED leaves them pending, and they are
    sent again with C(sync_level=checksum); (2) scan and diff; (3) create empty directories never
    sent (C(operation_mkdir)) on each destination; (4) submit changed files in tasks of
    O(items_per_task) through the exactly-once submit (the submission id and the file versions are
    committed before the request); (5) prune paths deleted from the source from the index, reporting
    them, and delete them on the destinations only with O(delete_destination=true)."
  - "Every directory is read every run: a directory's mtime does not change when a file inside it is
    rewritten. The index stores each name once per directory (a trie in SQLite), about 20 bytes per
    file, and the scan holds one directory in memory at a time, so memory stays flat as the tree grows."
  - O(state=marked) sets the last-transfer time (S1's C(set_time)); O(state=reset) forgets everything so
    the next run sends all.
  - Symbolic links are not followed and are reported; names that are not valid UTF-8 cannot be
    expressed in Globus paths and are skipped with a warning, which lists a skipped directory and the
    files below it, each byte that is not UTF-8 shown as C(\xNN); unreadable directories are reported and
    their index entries kept.
  - Tasks are recorded in the state database with the job name as C(job), so
    M(scidata.replication.globus_task_events) collects their events, and the job's C(sync_jobs) row
    is updated every run for the dashboard.
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
      - Scans and reports the counts of new, modified, deleted and unchanged files and empty
        directories with a sample of paths, and the tasks that would be submitted. Nothing is
        submitted, no directory is created, and neither the index file nor the state database is
        created or modified (the plan runs on a temporary copy of the index). The tree is scanned before
        the plan's first statement on the state database, so no real run waits for the scan of a plan.
  diff_mode:
    support: full
    details:
      - Returns C(diff.prepared), per destination up to O(sample_size) paths the run sends (V(+)) or
        deletes (V(-)), with how many more.
  idempotent:
    support: full
    details:
      - A second run reports a change only when the tree changed, or something was submitted or created.
options:
  job:
    description:
      - The job name. It names the index file, the run lock and the C(sync_jobs) row, and is the
        C(job) of the job's tasks in the state database. Many jobs can run on one host.
    type: str
    required: true
  state:
    description:
      - V(present) runs the replication.
      - V(marked) scans the tree and counts every file modified at or before O(as_of) as transferred and
        every later one as never sent, for the whole tree or the subtree at O(subpath). Use it before the
        first run to skip old data, or with an earlier time to force a retry. Makes no Globus call.
      - V(reset) deletes the job's index, so the next run sends everything (Globus skips files that are
        already at a destination, per O(sync_level)). Makes no Globus call.
    type: str
    choices: [present, marked, reset]
    default: present
  src_dir:
    description:
      - The local directory to replicate. Required unless O(state=reset).
      - An index belongs to one O(src_dir); use O(state=reset) or another O(job) to point a job elsewhere.
    type: path
  source_collection:
    description: The Globus collection that serves O(src_dir). Required with O(state=present).
    type: str
  source_path:
    description: The path on O(source_collection) that corresponds to O(src_dir). Required with O(state=present).
    type: str
  destinations:
    description:
      - Where the tree goes. The contents of O(src_dir) land under each O(destinations[].path).
      - Required with O(state=present). When a destination is added to a job, every file is offered
        again to all of them.
    type: list
    elements: dict
    suboptions:
      collection:
        description: The destination collection id.
        type: str
        required: true
      path:
        description: The path on the destination collection that corresponds to O(src_dir).
        type: str
        required: true
  index_dir:
    description:
      - Directory for the job's index file C(dir_trie_sync-<job>.sqlite). It must be on the scanning host;
        keep it on a local file system.
      - Defaults to the directory of a SQLite O(state_db), or C(~/.local/state/scidata-replication) with
        a PostgreSQL one.
      - An O(index_dir) inside O(src_dir) is left out of the replication, with everything in it.
    type: path
  compare:
    description:
      - How a changed file is detected. V(mtime) compares modification times (to the nanosecond),
        V(mtime_size) modification times and sizes, V(hash) the O(hash_algorithm) digest of the contents.
      - V(hash) reads only the files whose size, modification time or change time (C(st_ctime), which
        every write, C(touch) and C(chmod) moves and which no user can set back) moved since the last scan;
        a file whose contents are the same is not sent again. The first run on an index written before
        change times were kept reads every file once, and says so in a warning.
      - "What each mode catches: V(mtime) any rewrite that moves the modification time (a rewrite that sets
        it back to the very nanosecond it had is missed); V(mtime_size) the same, and any change of size
        (a same-size rewrite with the modification time set back is missed); V(hash) every change of
        contents, including a same-size rewrite with the modification time set back, since such a
        rewrite still moves the change time. A file read within 0.1 seconds of its last change is read
        again on the next run, so a rewrite within the same timestamp tick (file systems keep them at a few
        milliseconds) is not missed either; a file system whose timestamps are coarser than that, or set by
        a server clock far from this host's, can still hide such a rewrite. A change that keeps size and modification time is sent with
        C(sync_level=checksum), so Globus does not skip it. O(state=marked) with an earlier O(as_of), or
        O(state=reset), sends files again, compared by checksum."
    type: str
    choices: [mtime, mtime_size, hash]
    default: mtime_size
  hash_algorithm:
    description: The digest used by O(compare=hash).
    type: str
    choices: [sha256, md5]
    default: sha256
  include:
    description:
      - Shell-style globs; when given, only files matching one are replicated. A glob without C(/) is
        matched against the file name and the path relative to O(src_dir), one with C(/) against the path.
      - Directories are always descended.
    type: list
    elements: str
    default: []
  exclude:
    description:
      - Shell-style globs (as in O(include)) for files and directories to leave out; an excluded
        directory is not descended. Excluded paths leave the index and are never deleted on a destination.
    type: list
    elements: str
    default: []
  as_of:
    description:
      - With O(state=marked), the last-transfer time, as seconds since the epoch (a number) or an ISO 8601
        time (C(2024-05-01T00:00:00+00:00); without an offset it is the host's local time). It must not be
        in the future. It is stored as a number.
    type: raw
  subpath:
    description:
      - With O(state=marked), a directory or file relative to O(src_dir) to mark instead of the whole tree.
    type: str
  preflight:
    description:
      - Before anything changes, check that O(src_dir) is readable, the index writable, the source path
        listable and every destination collection ready (as M(scidata.replication.globus_collection_info)
        does). A failed preflight changes nothing and says why.
      - The local checks always run.
    type: bool
    default: true
  items_per_task:
    description: Files carried by one task.
    type: int
    default: 10000
  max_submissions_per_run:
    description: Tasks submitted per run, across destinations; the rest waits for the next run.
    type: int
    default: 10
  max_active_tasks:
    description: Open tasks of the job allowed per destination.
    type: int
    default: 3
  max_file_failures:
    description:
      - A file whose task fails is sent again at once in a task half as large, until it fails in a task
        of its own (or is skipped by Globus with O(skip_source_errors)); after that many failures of its
        own it is quarantined, no longer sent, and reported in RV(quarantined) and a warning, while every
        other file goes on.
      - A quarantined file is sent again when it changes, or after O(state=marked) with an earlier O(as_of).
    type: int
    default: 3
  file_retry_backoff:
    description:
      - Seconds a file that failed in a task of its own waits before its next attempt, doubled after
        each further failure (at most a day).
    type: int
    default: 300
  delete_destination:
    description:
      - Delete on every destination the files (and directories) that were sent and then deleted from the
        source, with delete tasks submitted exactly once. Off by default, deleted paths are only pruned
        from the index and reported.
      - A path Globus would read as one in the home directory (a top-level directory named C(~) where a
        destination path is C(/)) is never deleted; a warning names it.
    type: bool
    default: false
  sample_size:
    description: How many paths each list in RV(samples) and RV(tasks) shows at most.
    type: int
    default: 20
  scan_workers:
    description:
      - Processes that read the tree in parallel, each a share of its subtrees beside the index, while
        this one writes what they found changed. V(0) means one per CPU this process may use, at most 8;
        V(1) reads the tree in this process alone.
      - Workers are used once the index knows a few hundred directories; a first scan is done in this
        process. While they run, the index is in SQLite's WAL mode, which needs O(index_dir) on a local
        file system; where the index cannot be switched to it, this process scans alone.
    type: int
    default: 0
  label:
    description:
      - Task label template with the fields C({route}) (the job name), C({items}), C({first}) (base name
        of the first file), C({date}) and C({attempt}) (2 for a retry).
      - A label longer than 128 characters or containing a line break is refused before any request.
    type: str
    default: "{route} {date}"
notes:
  - "The invariant: after a run that reports nothing pending (RV(pending), RV(in_flight), RV(open_tasks),
    RV(deletes_pending) and RV(counts.empty_dirs) all zero), every destination holds exactly the source's
    regular files and directories, except symbolic links, special files, names that are not valid UTF-8
    and excluded paths."
  - "Deletions (O(delete_destination=true)): a file or directory that vanished from the source is deleted
    on every destination that may hold it: one confirmed there, delivered to some destinations only, in a
    task still running (the delete waits until that task ends), or an empty directory created there. A
    path that comes back before its delete is submitted is not deleted and is sent again with
    C(sync_level=checksum); one that comes back while its delete is submitted (or INACTIVE) is sent, and
    nothing is created below it, only after that delete has finished. Excluded paths are never deleted."
  - "Failures: a failed task's files are sent again at once with C(sync_level=checksum); if they fail
    again they go out in tasks half as large, until a file fails in a task of its own, or is skipped by
    Globus (O(skip_source_errors)), which counts against that file alone. Such a file waits
    O(file_retry_backoff), doubled each time, and after O(max_file_failures) is quarantined: it stays
    pending, is reported in RV(quarantined) and a warning, and every other file goes on. A file renamed or
    deleted between the scan and its transfer fails its task; the next scan forgets it, and the other files
    of the task are sent again."
  - Files skipped with O(skip_source_errors) are never marked sent; they stay pending and are tried again.
  - A destination added later is sent every file; the others are not sent again what they hold. A
    destination removed stops counting, so files every remaining destination holds are done.
  - The C(filter_rules) and C(delete_destination_extra) options of M(scidata.replication.globus_transfer)
    only act on recursive items; this module sends one item per file, so O(include)/O(exclude) and
    O(delete_destination) take their place.
  - Replaces the LBNL SCG trie tool (C(main.py), C(set_time.py), C(test_config.py)) and the LBNL HPCS MD5
    tool, without their bugs (only the top directory's mtime checked; files marked at submission so
    failures were lost; every byte read every run; timestamps compared as strings).
seealso:
  - module: scidata.replication.globus_transfer
  - module: scidata.replication.globus_task_events
  - module: scidata.replication.globus_collection_info
author:
  - Scidata Replication maintainers (@scidata)
"""

EXAMPLES = r"""
- name: Skip what was already copied by hand before the first scheduled run
  scidata.replication.dir_trie_sync:
    job: xmas-2018
    state: marked
    src_dir: /xmasdata/2018
    as_of: "2018-06-01T00:00:00-07:00"

- name: Replicate the beamline tree to the cluster (every 15 minutes from cron or a timer)
  scidata.replication.dir_trie_sync:
    job: xmas-2018
    src_dir: /xmasdata/2018
    source_collection: 2f9482c4-67c1-11e8-9a41-0a6d4e044368
    source_path: /xmasdata/2018
    destinations:
      - collection: 45af5ed4-67c2-11e8-9a41-0a6d4e044368
        path: /clusterfs/xmas/xmas-storage/2018
    exclude: ["*.tmp", ".*"]
  register: sync

- name: Verify contents by digest, and mirror deletions to two sites
  scidata.replication.dir_trie_sync:
    job: hpcs-auto
    src_dir: /global/scratch/auto
    source_collection: 9d6d994a-6d04-11e5-ba46-22000b92c6ec
    source_path: /global/scratch/auto
    destinations:
      - {collection: dd1ee92a-6d04-11e5-ba46-22000b92c6ec, path: /replica/auto}
      - {collection: ef1a9560-7ca1-11e5-992c-22000b96db58, path: /backup/auto}
    compare: hash
    hash_algorithm: md5
    delete_destination: true

- name: Force a retry of the subtree written since May
  scidata.replication.dir_trie_sync:
    job: xmas-2018
    state: marked
    src_dir: /xmasdata/2018
    subpath: run042
    as_of: 1714521600

- name: See what the next run would send
  scidata.replication.dir_trie_sync:
    job: xmas-2018
    src_dir: /xmasdata/2018
    source_collection: 2f9482c4-67c1-11e8-9a41-0a6d4e044368
    source_path: /xmasdata/2018
    destinations: [{collection: 45af5ed4-67c2-11e8-9a41-0a6d4e044368, path: /clusterfs/xmas/xmas-storage/2018}]
  check_mode: true
  register: plan

- name: Forget the job's index so the next run offers every file again
  scidata.replication.dir_trie_sync:
    job: xmas-2018
    state: reset
"""

RETURN = r"""
job:
  description: The job name.
  returned: always
  type: str
  sample: xmas-2018
locked:
  description: True when another run of the job held the lock and nothing was done.
  returned: when the lock was busy
  type: bool
index:
  description: The job's index file.
  returned: success
  type: dict
  sample: {path: /var/lib/replication/dir_trie_sync-xmas-2018.sqlite, size_bytes: 36044800, files: 1000000}
  contains:
    path:
      description: Where it is.
      type: str
    size_bytes:
      description: Its size on disk (0 when it does not exist, for example in check mode before the first run).
      type: int
    files:
      description: Files it holds (after this run; in check mode, after the planned run).
      type: int
counts:
  description: What the scan found, compared with the index before it.
  returned: when O(state) is V(present) or V(marked)
  type: dict
  sample: {new: 12, modified: 1, deleted: 2, unchanged: 99985, files: 99998, directories: 1200, empty_dirs: 1,
           symlinks: 0, special: 0, skipped: 0, unreadable: 0, excluded: 0}
  contains:
    new:
      description: Files not in the index before.
      type: int
    modified:
      description: Files whose contents changed (per O(compare)) and now wait to be sent.
      type: int
    deleted:
      description: Files no longer in the source, pruned from the index.
      type: int
    unchanged:
      description: Files as they were at the last scan (they may still be waiting to be sent).
      type: int
    files:
      description: Regular files seen.
      type: int
    directories:
      description: Directories read.
      type: int
    empty_dirs:
      description: Empty directories never created on every destination (after this run; planned in check mode).
      type: int
    symlinks:
      description: Symbolic links, not followed and not sent.
      type: int
    special:
      description: Sockets, FIFOs and devices, not sent.
      type: int
    skipped:
      description:
        - Paths whose names are not valid UTF-8, not sent; a directory whose name is not (shown with a
          trailing C(/)) counts once, and so does each regular file below it.
      type: int
    unreadable:
      description: Directories or files that could not be read; their index entries are kept.
      type: int
    excluded:
      description: Paths left out by O(include) / O(exclude).
      type: int
samples:
  description: For each count of RV(counts), the first O(sample_size) paths, relative to O(src_dir).
  returned: when O(state) is V(present) or V(marked)
  type: dict
  sample: {new: [run042/frame_0001.h5], modified: [run041/deep/er/log.txt], deleted: [], empty_dirs: [run043]}
scan_seconds:
  description: How long the scan and diff took.
  returned: when O(state) is V(present) or V(marked)
  type: float
scan_workers:
  description: Worker processes that read the tree in this run; V(0) when this process read it alone.
  returned: when O(state) is V(present) or V(marked)
  type: int
  sample: 2
settled:
  description:
    - Earlier tasks of the job that finished and were applied to the index by this run.
    - C(files_transferred) counts the files that succeeded tasks confirmed on their destination, once per
      destination (a file delivered to 2 destinations counts twice, one delivered to 1 of 2 destinations
      counts once, though it is still pending for the other); C(destinations) gives that count for each
      destination, in the order of O(destinations).
    - C(files_to_retry) counts the files of failed tasks, which stay pending.
  returned: when O(state=present)
  type: dict
  sample: {succeeded: 2, failed: 1, files_transferred: 20000, files_to_retry: 120, forgotten: 0,
           destinations: [{destination_collection: 45af5ed4-67c2-11e8-9a41-0a6d4e044368,
                           destination_path: /clusterfs/xmas/2018, files_transferred: 20000}]}
tasks:
  description:
    - Tasks submitted by this run (in check mode, that would be submitted), with up to O(sample_size) paths each.
  returned: when O(state=present)
  type: list
  elements: dict
  sample:
    - {destination_collection: 45af5ed4-67c2-11e8-9a41-0a6d4e044368, destination_path: /clusterfs/xmas/2018,
       items: 13, sync_level: mtime, label: xmas-2018 2024-05-02, paths: [run042/frame_0001.h5],
       submission_id: 8a3f2a1e-0000-4000-8000-000000000001, task_id: 5a3f2a1e-0000-4000-8000-000000000001,
       code: Accepted}
reason:
  description:
    - Why nothing was submitted, if so - nothing to send; waiting for open tasks (no free task slot);
      the pending files are in open tasks; they wait for deletes on a destination to finish first; or
      they are quarantined or wait for their retry time after failures.
    - Also set when the run stopped because the Globus identity has O(identity_max_open_tasks) open tasks
      (see RV(waiting_for_budget)), even after some tasks went out.
  returned: when O(state=present)
  type: str
waiting_for_budget:
  description:
    - Whether files or deletes were left pending because the Globus identity already had
      O(identity_max_open_tasks) open tasks (of this job, other jobs and globus_transfer routes sharing
      O(state_db)). Nothing is lost; a later run sends them once tasks have finished.
  returned: when O(state=present)
  type: bool
task_budget:
  description: The Globus identity's open tasks after this run, against O(identity_max_open_tasks).
  returned: when O(state=present)
  type: dict
  sample: {open_tasks: 3, limit: 100}
  contains:
    open_tasks:
      description: Tasks of every job and route sharing the state database that are not finished.
      type: int
    limit:
      description: O(identity_max_open_tasks).
      type: int
resubmitted:
  description: Submissions an earlier run had persisted but not seen accepted, posted again with the same id.
  returned: when O(state=present)
  type: list
  elements: dict
directories_created:
  description: Empty directories created on every destination by this run.
  returned: when O(state=present)
  type: int
directory_errors:
  description: Empty directories that could not be created (retried next run), with the reason.
  returned: when O(state=present)
  type: list
  elements: str
deletes:
  description: Delete tasks submitted by this run (only with O(delete_destination)).
  returned: when O(state=present)
  type: list
  elements: dict
pending:
  description: Files not yet confirmed on every destination after this run (including those in open tasks).
  returned: when O(state) is V(present) or V(marked)
  type: int
in_flight:
  description: Files carried by tasks not yet finished.
  returned: when O(state=present)
  type: int
open_tasks:
  description: Tasks of the job not yet finished.
  returned: when O(state=present)
  type: int
deletes_pending:
  description: Destination deletes waiting to be submitted or to finish.
  returned: when O(state=present)
  type: int
diff:
  description: In diff mode, what the run sends and deletes per destination (bounded, see O(sample_size)).
  returned: in diff mode, with O(state=present)
  type: dict
  sample: {prepared: "0d3a...:/replica\n+ run1/frame_00.h5\n+ ... and 41 more\n- old/frame.h5\n"}
quarantined:
  description:
    - Files no longer sent after O(max_file_failures) failures of their own, or at once when Globus cannot
      address them (a top-level directory named C(~) where O(source_path) or a destination path is C(/),
      since Globus reads C(/~/) as the home directory), with up to O(sample_size) of them, each with its path,
      its failed attempts and the reason.
  returned: when O(state=present)
  type: dict
  sample: {count: 1, files: [{path: "run1/locked.h5", attempts: 7, reason: "skipped: PERMISSION_DENIED ..."}]}
  contains:
    count:
      description: How many files are quarantined.
      type: int
    files:
      description: Up to O(sample_size) of them, as dicts with C(path), C(attempts) and C(reason).
      type: list
      elements: dict
marked:
  description: With O(state=marked), the marking applied.
  returned: when O(state=marked)
  type: dict
  sample: {as_of: 1527836400.0, subpath: "", transferred: 120000, to_send: 35}
  contains:
    as_of:
      description: The last-transfer time, seconds since the epoch.
      type: float
    subpath:
      description: The subtree marked ('' for the whole tree).
      type: str
    transferred:
      description: Files now counted as transferred (modified at or before RV(marked.as_of)).
      type: int
    to_send:
      description: Files now counted as never sent.
      type: int
removed:
  description: With O(state=reset), whether an index existed (and was, or would be, deleted).
  returned: when O(state=reset)
  type: bool
"""

import os
import time

from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python

try:
    from ansible_collections.scidata.replication.plugins.module_utils import _pathindex
    from ansible_collections.scidata.replication.plugins.module_utils import _transfers
    from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError
    from ansible_collections.scidata.replication.plugins.module_utils._module import ReplicationModule
except SyntaxError:
    # A Python too old to compile the collection's code gets the same clear refusal as one that can.
    refuse_unsupported_python()
    raise

TRANSFER_OPTIONS = tuple(_transfers.TRANSFER_ARGUMENT_SPEC)


def job_config(params):
    """The options the core needs, checked; ``index_path`` and what the scan must skip added."""
    src_dir = os.path.abspath(params["src_dir"]) if params["src_dir"] else None
    index_dir = params["index_dir"] or _pathindex.default_index_dir(params["state_db"])
    index_path = _pathindex.index_path(os.path.abspath(index_dir), params["job"])
    options = dict((name, params[name]) for name in TRANSFER_OPTIONS)
    options.update(delete_destination_extra=False, filter_rules=[])
    skip_rel = []
    if src_dir and os.path.dirname(index_path).startswith(src_dir.rstrip("/") + "/"):
        rel = os.path.relpath(index_path, src_dir)
        skip_rel = [rel, rel + "-journal", rel + "-wal", rel + "-shm"]
        if os.path.dirname(rel):
            skip_rel.append(os.path.dirname(rel))  # the index directory is not replicated either
    config = dict(job=params["job"], src_dir=src_dir, index_path=index_path, source_collection=params["source_collection"],
                  source_path=params["source_path"], destinations=params["destinations"] or [],
                  include=params["include"], exclude=params["exclude"], items_per_task=params["items_per_task"],
                  max_submissions_per_run=params["max_submissions_per_run"],
                  max_active_tasks=params["max_active_tasks"], identity_max_open_tasks=params["identity_max_open_tasks"],
                  max_file_failures=params["max_file_failures"],
                  file_retry_backoff=params["file_retry_backoff"], label=params["label"],
                  sample_size=params["sample_size"], delete_destination=params["delete_destination"],
                  scan_workers=_pathindex.scan_workers(params["scan_workers"]), options=options, skip_rel=skip_rel)
    if params["state"] == "present" and not config["destinations"]:
        raise ConfigError("state=present needs at least one destination")
    _pathindex.check_options(config)
    _transfers.check_label_template(params["label"], params["job"])
    return config


def sync(module):
    params = module.params
    config = job_config(params)
    if params["state"] == "reset":
        return reset(module, config)
    _pathindex.local_preflight(config["src_dir"], config["index_path"])
    if params["state"] == "marked":
        return mark(module, config)
    client = module.transfer_client()
    preflight = None
    if params["preflight"]:
        preflight = _pathindex.globus_preflight(client, config["source_collection"], config["source_path"],
                                                config["destinations"])
    db = module.state()
    with _pathindex.opened_index(config["index_path"], params["compare"], params["hash_algorithm"],
                                 module.check_mode) as index:
        result = _pathindex.DirTrieSync(index, config, db, client, check_mode=module.check_mode,
                                        warn=module.warn).run()
    if preflight is not None:
        result["preflight"] = [dict(id=entry["id"], ready=entry["ready"]) for entry in preflight]
    if module.diff_mode:
        result["diff"] = dict(prepared=_pathindex.planned_diff(result["tasks"], result["deletes"], config["sample_size"]))
    return result


def mark(module, config):
    params = module.params
    started = time.time()
    as_of_ns = _pathindex.parse_as_of(params["as_of"])
    if params["subpath"] and not os.path.lexists(os.path.join(config["src_dir"], params["subpath"])):
        raise ConfigError("subpath %s does not exist in src_dir %s: nothing was changed"
                          % (params["subpath"], config["src_dir"]))
    db = module.state()
    with _pathindex.opened_index(config["index_path"], params["compare"], params["hash_algorithm"],
                                 module.check_mode) as index:
        index.bind(config["job"], config["src_dir"])
        scan = index.scan(config["src_dir"], include=config["include"], exclude=config["exclude"],
                          sample_size=config["sample_size"], skip_rel=config["skip_rel"],
                          workers=config["scan_workers"])
        transferred, to_send, marked_changed = index.mark(as_of_ns, params["subpath"], root=config["src_dir"])
        counts, samples = scan.as_dict()
        state = index.counts()
        files = index.total_files()
    result = dict(changed=bool(scan.index_changed or marked_changed), job=config["job"],
                  index=dict(path=config["index_path"], files=files,
                             size_bytes=os.path.getsize(config["index_path"]) if os.path.exists(config["index_path"])
                             else 0),
                  counts=dict(counts, empty_dirs=state["empty_dirs_pending"]), samples=samples,
                  scan_seconds=round(scan.seconds, 3), scan_workers=scan.workers, pending=state["pending"],
                  marked=dict(as_of=as_of_ns / 1e9, subpath=params["subpath"] or "", transferred=transferred,
                              to_send=to_send))
    _pathindex.record_job(db, config["job"], config["src_dir"], started, time.time(), files, state["pending"],
                          dict(marked=result["marked"], changed=result["changed"]))
    return result


def reset(module, config):
    path = config["index_path"]
    existed = os.path.exists(path)
    if existed and not module.check_mode:
        _pathindex.remove_index(path)
    db = module.state()
    _pathindex.record_job(db, config["job"], config["src_dir"], time.time(), None, 0, 0, dict(reset=True))
    return dict(changed=existed, job=config["job"], removed=existed, index=dict(path=path, size_bytes=0, files=0))


def main():
    module = ReplicationModule(
        argument_spec=dict(
            job=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "marked", "reset"]),
            src_dir=dict(type="path"),
            source_collection=dict(type="str"),
            source_path=dict(type="str"),
            destinations=dict(type="list", elements="dict", options=dict(
                collection=dict(type="str", required=True),
                path=dict(type="str", required=True),
            )),
            index_dir=dict(type="path"),
            compare=dict(type="str", default="mtime_size", choices=list(_pathindex.COMPARE_MODES)),
            hash_algorithm=dict(type="str", default="sha256", choices=list(_pathindex.HASH_ALGORITHMS)),
            include=dict(type="list", elements="str", default=[]),
            exclude=dict(type="list", elements="str", default=[]),
            as_of=dict(type="raw"),
            subpath=dict(type="str"),
            preflight=dict(type="bool", default=True),
            items_per_task=dict(type="int", default=10000),
            max_submissions_per_run=dict(type="int", default=10),
            max_active_tasks=dict(type="int", default=3),
            max_file_failures=dict(type="int", default=3),
            file_retry_backoff=dict(type="int", default=300),
            delete_destination=dict(type="bool", default=False),
            sample_size=dict(type="int", default=20),
            scan_workers=dict(type="int", default=0),
            label=dict(type="str", default="{route} {date}"),
            # One unpacking: a module must still compile on the old Pythons it refuses (see _python_floor).
            **dict(_transfers.TRANSFER_ARGUMENT_SPEC, **_transfers.TASK_BUDGET_ARGUMENT_SPEC)
        ),
        uses_globus=True,
        mutually_exclusive=_transfers.TRANSFER_MUTUALLY_EXCLUSIVE,
        required_if=[
            ("state", "present", ("src_dir", "source_collection", "source_path", "destinations")),
            ("state", "marked", ("src_dir", "as_of")),
        ],
        supports_check_mode=True,
    )
    module.run(sync, job=module.params["job"])


if __name__ == "__main__":
    main()
