#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
module: epn_rsync
short_description: Repatriate synchrotron experiment data (EPNs) with rsync over SSH
version_added: 1.0.0
description:
  - Pulls the data folder of each EPN (experiment proposal number) from the facility's SSH server with
    C(rsync) into a project folder, and records every attempt in the state database. It does what mxsync
    (HPC_ASSyncy) and asynchy (MeRC_Asyncy) did, without their bugs.
  - "The EPNs come from exactly one of: an explicit list (O(epns)); the facility portal (O(from_portal=true)):
    visits that ended before the earliest start of any visit still running, within O(visit_day_range) days, so an
    experiment still running is never synced; or the queue in the database (O(from_db=true)) that
    M(scidata.replication.epn_inventory) fills."
  - EPNs already synced are skipped. An EPN is marked synced only when rsync's exit code says so (see
    O(exit_policy)).
  - The source is C({src_prefix}/{beamline}/{epn}/) on O(host) and the destination
    C({dest_root}/{project}/{epn}/data/), with the project folder from O(epn_cap_map). EPNs without a mapping are
    reported in RV(unmapped), never guessed.
  - rsync runs as an argument list (never through a shell), with the paths after C(--) and C(--protect-args), and
    ssh runs self-contained, with C(-F /dev/null) (no user or system ssh configuration), C(BatchMode=yes), only
    O(key_file) offered (C(IdentitiesOnly=yes)), strict host-key checking against O(known_hosts_file) alone
    (C(GlobalKnownHostsFile=/dev/null)), a connect timeout and keep-alives. The default options reproduce mxsync's
    intent; live runs and check mode use the same options.
  - Modes of the copied data are group-shared and closed to others (C(--chmod=D2770,Fug+rwX,Fo-rwx)), so folders
    are 2770 (setgid, so new files keep the project group) and files 660, or 770 when the source file is executable.
    Folders above the data folder that the module creates get the default mode of the account (umask).
  - With a PostgreSQL O(state_db), several hosts may run this module at the same time against the same database;
    each EPN is claimed by exactly one run (a lease that the running module keeps renewing), and the EPNs of a run
    that died are taken over once its lease (O(claim_ttl)) has expired. With SQLite (one host) the run lock
    keeps runs apart.
  - With O(log_file) set, a JSON line with an C(event) key (V(plan), V(start) or V(finish), the EPN, the attempt,
    rc, files and bytes) is appended as each EPN starts and finishes, so a long run can be followed with
    C(tail -f); the usual one-line summary of the run follows at the end.
extends_documentation_fragment:
  - scidata.replication._epn
  - scidata.replication._epn.portal
  - scidata.replication._state
  - scidata.replication._attributes
  - scidata.replication._attributes.actiongroup_state_epn
attributes:
  check_mode:
    support: full
    details:
      - Runs C(rsync --dry-run --itemize-changes) with otherwise the same options and returns what would change per
        EPN. Writes nothing to the database or the destination, and takes no claims.
  diff_mode:
    support: full
    details:
      - Returns the itemized changes as C(diff.prepared).
  idempotent:
    support: full
    details:
      - A second run finds the EPNs synced and changes nothing.
options:
  epns:
    description:
      - Sync these EPNs.
      - Mutually exclusive with O(from_portal) and O(from_db).
    type: list
    elements: str
  from_portal:
    description:
      - Sync the EPNs of the portal visits that are ready (see the description). Needs O(portal_url) and
        O(equipment).
    type: bool
    default: false
  from_db:
    description:
      - Sync the pending EPNs that M(scidata.replication.epn_inventory) recorded, ordered by O(order), at most
        O(limit) per run.
    type: bool
    default: false
  order:
    description:
      - With O(from_db=true), V(ASC) syncs the EPNs with the oldest data first, V(DESC) the newest first.
    type: str
    choices: [ASC, DESC]
    default: ASC
  limit:
    description:
      - With O(from_db=true), the most EPNs one run claims.
    type: int
    default: 50
  import_ignore_file:
    description:
      - Path of an mxsync C(ignore.yml); the EPNs in its C(previouslySynched) list are recorded as synced (once;
        EPNs the database already knows about are left alone) and skipped.
    type: path
  epn_cap_map:
    description:
      - Maps an EPN base number (the leading digits of the EPN name) to its project folder under O(dest_root).
    type: dict
    required: true
  dest_root:
    description:
      - Absolute local folder that holds the project folders.
    type: path
    required: true
  dest_template:
    description:
      - Destination of each EPN. Only the fields C({dest_root}), C({src_prefix}), C({beamline}), C({project})
        and C({epn}) may be used.
    type: str
    default: "{dest_root}/{project}/{epn}/data/"
  source_template:
    description:
      - Folder of each EPN on O(host), with the same fields as O(dest_template). Keep the trailing C(/) so the
        folder's content is copied.
    type: str
    default: "{src_prefix}/{beamline}/{epn}/"
  rsync_path:
    description:
      - The local rsync program. A warning is given when it is older than 3.4.0 (the January 2025 security fixes).
    type: str
    default: rsync
  compress:
    description:
      - Compress data in transit (C(--compress)).
    type: bool
    default: false
  bwlimit:
    description:
      - Bandwidth limit per rsync process in KiB/s, optionally with a V(K), V(M) or V(G) suffix (C(--bwlimit)).
    type: str
  timeout:
    description:
      - rsync's I/O timeout in seconds (C(--timeout)); V(0) disables it.
    type: int
    default: 300
  partial_dir:
    description:
      - Where rsync keeps partly transferred files so an interrupted transfer resumes (C(--partial-dir)),
        relative to each destination folder.
    type: str
    default: .rsync-partial
  protect_args:
    description:
      - Send file names inside the rsync protocol (C(--protect-args)) instead of through the remote shell. Turn
        off only for restricted shells such as rrsync.
    type: bool
    default: true
  extra_args:
    description:
      - More rsync options, each spelled in full and only from this list (anything else is refused, so no
        option can replace the SSH command, turn off argument protection, change name encoding or delete files),
        namely V(--checksum), V(--ignore-times), V(--numeric-ids), V(--omit-dir-times), V(--prune-empty-dirs),
        V(--sparse), V(--whole-file), V(--no-whole-file), V(--ipv4), V(--ipv6), and with C(=VALUE)
        V(--exclude), V(--include), V(--filter), V(--max-size), V(--min-size), V(--modify-window),
        V(--block-size), V(--compress-choice), V(--compress-level), V(--skip-compress), V(--checksum-choice),
        V(--rsync-path).
    type: list
    elements: str
    default: []
  workers:
    description:
      - How many rsync processes run at once.
    type: int
    default: 1
  exit_policy:
    description:
      - Overrides of the exit-code policy, mapping an rsync exit code to V(success), V(warn) (synced, with a
        warning), V(retry), V(retry_once), V(fatal) or V(stop).
      - "The default: retry with backoff 5, 10, 12, 30, 35, 255; retry once then report 11, 14, 21, 22, 23;
        24 (files vanished) is success with a warning; fatal 1, 2, 3, 4, 13, 25; 20 stops the run. Other codes are
        fatal."
      - rsync killed by a signal (the OOM killer, an operator's C(kill -9)) is retried like V(retry), since a
        signal says nothing about the EPN.
      - An SSH host-key or authentication failure stops the run whatever the exit code, without counting against
        the EPN.
    type: dict
    default: {}
  max_attempts:
    description:
      - Attempts per EPN, across runs, before an EPN with retryable errors is marked failed.
    type: int
    default: 5
  run_retries:
    description:
      - Retries within one run for an EPN whose error is retryable; later attempts wait for the next run.
    type: int
    default: 2
  retry_delay:
    description:
      - Seconds before the first retry; the wait doubles with each attempt up to O(retry_max_delay). The same
        backoff decides when the next run may try an EPN again.
    type: int
    default: 30
  retry_max_delay:
    description:
      - The longest wait between attempts, in seconds.
    type: int
    default: 3600
  missing_source_days:
    description:
      - How long an EPN whose folder does not exist on O(host) yet (rsync exit code 23, C(change_dir ... No such
        file or directory)) is looked for again, in days from when it was first queued. Each run looks once; such
        a run does not count as an attempt. After this many days the EPN is marked failed.
    type: int
    default: 7
  retry_failed:
    description:
      - Also try EPNs marked failed, starting their attempt count again.
    type: bool
    default: false
  force:
    description:
      - Sync the chosen EPNs even when they are synced already or waiting for a retry.
    type: bool
    default: false
  claim_ttl:
    description:
      - Seconds a claim on an EPN lasts unless the run renews it (it renews every third of that while it works).
        After a run dies, its EPNs can be taken by another run after this long.
    type: int
    default: 300
requirements:
  - rsync on the target and on O(host) (3.4.0 or later recommended), and the OpenSSH client on the target.
  - PyYAML on the target for O(import_ignore_file) (installed with ansible-core).
notes:
  - The module fails when an EPN failed, when rsync was told to stop (exit code 20), when the facility could not be
    reached, or when SSH refused the host key or the login; RV(epns) then still lists every EPN with its outcome.
  - What counts as an attempt, what is retried and what marks an EPN failed is described in the collection's
    README (section EPN repatriation).
seealso:
  - module: scidata.replication.epn_inventory
  - module: scidata.replication.epn_alert
  - module: ansible.builtin.known_hosts
  - name: rsync exit values
    description: The exit codes rsync documents.
    link: https://download.samba.org/pub/rsync/rsync.1#EXIT_VALUES
author:
  - Scidata Replication maintainers (@scidata)
"""

EXAMPLES = r"""
- name: Trust the facility's SSH host key (checked out of band)
  ansible.builtin.known_hosts:
    path: /etc/scidata-replication/known_hosts
    name: sftp.synchrotron.org.au
    key: "sftp.synchrotron.org.au ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI..."

- name: Sync two EPNs by name
  scidata.replication.epn_rsync:
    epns: [12345a, 12346b]
    host: sftp.synchrotron.org.au
    user: massive
    key_file: /etc/scidata-replication/id_ed25519
    known_hosts_file: /etc/scidata-replication/known_hosts
    beamline: MX2
    epn_cap_map: {"12345": proj001, "12346": proj002}
    dest_root: /projects

- name: Sync the finished visits of the last 30 days, four at a time (mxsync)
  scidata.replication.epn_rsync:
    from_portal: true
    portal_url: https://portal.synchrotron.org.au
    equipment:
      - id: "101"
        client_name: mx-client
        client_password: "{{ portal_client_password }}"
        username: mxuser
        password: "{{ portal_password }}"
    visit_day_range: 30
    host: sftp.synchrotron.org.au
    user: massive
    key_file: /etc/scidata-replication/id_ed25519
    known_hosts_file: /etc/scidata-replication/known_hosts
    beamline: MX2
    epn_cap_map: "{{ epn_cap_map }}"
    dest_root: /projects
    workers: 4
    import_ignore_file: /opt/mx_sync/etc/ignore.yml
    log_file: /var/log/scidata-replication/epn_rsync.jsonl

- name: Work through the inventory queue from several transfer hosts at once (asynchy)
  scidata.replication.epn_rsync:
    from_db: true
    order: DESC
    limit: 30
    state_db: postgresql://replication@db.example.org/replication
    host: sftp.synchrotron.org.au
    user: massive
    key_file: /etc/scidata-replication/id_ed25519
    known_hosts_file: /etc/scidata-replication/known_hosts
    epn_cap_map: "{{ epn_cap_map }}"
    dest_root: /projects
    bwlimit: 50M
    workers: 2
"""

RETURN = r"""
epns:
  description: One entry per EPN this run worked on, with the outcome of its last attempt.
  returned: success
  type: list
  elements: dict
  contains:
    epn:
      description: The EPN.
      type: str
    project:
      description: Its project folder from O(epn_cap_map).
      type: str
    source:
      description: The rsync source, C(user@host:path/).
      type: str
    destination:
      description: The local destination folder.
      type: str
    status:
      description:
        - V(success), V(warning) (synced, see C(warning)), V(retry) (left for a later run, see C(next_attempt_at)),
          V(retrying), V(failed) (retries used up), V(fatal) (not retried), V(stop), or V(interrupted) (the run
          stopped on a problem that is not the EPN's, such as an unreachable facility, the SSH host key or the login;
          the EPN's state and attempt count are unchanged).
        - In check mode, the outcome of the dry run.
      type: str
    rc:
      description: rsync's exit code of the last attempt (negative when killed by a signal).
      type: int
    meaning:
      description: What the exit code means, or why the SSH connection was refused.
      type: str
    attempts:
      description: Attempts in this run.
      type: int
    files:
      description: Regular files transferred (in check mode, that would be transferred).
      type: int
    bytes:
      description: Total size of the files transferred.
      type: int
    seconds:
      description: Wall time of the last attempt.
      type: float
    stats:
      description: All counters of rsync's C(--stats), such as C(literal_data) and C(matched_data).
      type: dict
    changes_total:
      description: Number of itemized changes.
      type: int
    changes:
      description: The itemized changes (at most 1000), in check mode and diff mode.
      type: list
      elements: dict
      contains:
        flags:
          description: rsync's itemize flags, for example V(>f+++++++++).
          type: str
        path:
          description: The path relative to the EPN folder, verbatim.
          type: str
    stderr_tail:
      description: The last lines rsync wrote to stderr, when the attempt did not fully succeed.
      type: str
    warning:
      description: Why a synced EPN has a warning (for example files that vanished during the transfer).
      type: str
    next_attempt_at:
      description: When a later run may try again (ISO 8601), for status V(retry).
      type: str
    stale_temp_files_removed:
      description: How many temporary files of earlier, killed rsyncs were removed from the destination before
        this run's rsync started.
      type: int
  sample:
    - epn: 12345a
      project: proj001
      source: massive@sftp.synchrotron.org.au:/data/MX2/12345a/
      destination: /projects/proj001/12345a/data/
      status: success
      rc: 0
      meaning: success
      attempts: 1
      files: 1804
      bytes: 53687091200
      seconds: 1203.5
      stats: {literal_data: 53687091200, matched_data: 0}
      changes_total: 1811
synced:
  description: EPNs synced by this run (in check mode, whose dry run succeeded).
  returned: success
  type: list
  elements: str
  sample: [12345a]
failed_epns:
  description: EPNs that failed (retries used up, or a fatal exit code); they are skipped until O(retry_failed).
  returned: always
  type: list
  elements: str
  sample: []
retrying:
  description: EPNs with a retryable error that a later run will try again.
  returned: success
  type: list
  elements: str
  sample: []
skipped_epns:
  description: EPNs left alone, with the reason (already synced, failed, waiting for a retry, claimed by another run).
  returned: success
  type: list
  elements: dict
  sample: [{epn: 12000a, reason: already synced at 2025-03-01T01:00:00+00:00}]
rejected:
  description: EPN names refused by the name rules (one that is not valid UTF-8 is shown with C(\xNN) escapes),
    with the reason.
  returned: success
  type: list
  elements: dict
  sample: [{epn: "../x", reason: "EPN is '.' or contains '..'"}]
unmapped:
  description: EPNs whose base number has no entry in O(epn_cap_map); not synced.
  returned: success
  type: list
  elements: str
  sample: [99999a]
held_back:
  description: With O(from_portal=true), portal visits not synced yet, with the reason (for example a visit still
    running).
  returned: success
  type: list
  elements: dict
  sample: [{epn: 12347a, reason: EPN has a visit still running}]
current_start:
  description: With O(from_portal=true), the earliest start of any visit still running (or now), ISO 8601.
  returned: when O(from_portal=true)
  type: str
  sample: "2025-03-10T01:00:00+00:00"
imported:
  description: EPNs recorded as synced from O(import_ignore_file) by this run.
  returned: success
  type: list
  elements: str
  sample: []
stopped:
  description: Whether rsync was told to stop (exit code 20) and the run stopped early.
  returned: success
  type: bool
  sample: false
interrupted:
  description: EPNs whose rsync ended on a problem that is not theirs (facility unreachable, SSH host key or
    login); the run stopped, and their state and attempt count in the database are unchanged.
  returned: always
  type: list
  elements: str
  sample: []
requeued:
  description: With O(from_portal=true), synced EPNs queued again because a later visit ended after their last
    sync.
  returned: success
  type: list
  elements: str
  sample: [12345a]
all_waiting:
  description: True when nothing was synced or failed and every EPN to do waits for a retry (the run log and a
    warning say so too), so monitoring can tell a stuck queue from an idle one.
  returned: success
  type: bool
  sample: false
rsync_version:
  description: The version of the local rsync.
  returned: success
  type: str
  sample: 3.4.1
diff:
  description: The itemized changes, one line per change with the EPN, the flags and the path.
  returned: in diff mode
  type: dict
  sample: {prepared: "12345a: >f+++++++++ image_0001.cbf\n"}
msg:
  description: A summary of the counts.
  returned: always
  type: str
  sample: 1 synced, 0 failed, 0 to retry, 3 skipped, 0 rejected, 0 unmapped
locked:
  description: True when another run held the lock and nothing was done.
  returned: when another run holds the lock
  type: bool
"""

import os

from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python

try:
    from ansible_collections.scidata.replication.plugins.module_utils._epn import (
        DEFAULT_DEST_TEMPLATE,
        DEFAULT_SOURCE_TEMPLATE,
        PORTAL_ARGUMENT_SPEC,
        SSH_ARGUMENT_SPEC,
    )
    from ansible_collections.scidata.replication.plugins.module_utils._epnsync import (
        DEFAULT_CLAIM_TTL,
        DEFAULT_MISSING_SOURCE_DAYS,
        EpnRsyncRun,
        RsyncProcesses,
    )
    from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError
    from ansible_collections.scidata.replication.plugins.module_utils._module import ReplicationModule
    from ansible_collections.scidata.replication.plugins.module_utils._rsync import (
        DEFAULT_IO_TIMEOUT,
        DEFAULT_MAX_ATTEMPTS,
        DEFAULT_PARTIAL_DIR,
        RSYNC_ENVIRONMENT,
    )
except SyntaxError:
    # A Python too old to compile the collection's code gets the same clear refusal as one that can.
    refuse_unsupported_python()
    raise


def sync(module):
    params = dict(module.params)
    rsync = params["rsync_path"]
    found = rsync if os.path.isabs(rsync) else module.ansible.get_bin_path(rsync)
    if not found or not os.access(found, os.X_OK):
        raise ConfigError("cannot find the rsync program %s on the target" % rsync, option="rsync_path")
    params["rsync_path"] = found
    run = EpnRsyncRun(
        params,
        module.state(),
        RsyncProcesses(RSYNC_ENVIRONMENT),
        check_mode=module.check_mode,
        diff_mode=module.diff_mode,
        warn=module.warn,
        progress=module.log_event,
    )
    return run.run()


def main():
    argument_spec = dict(SSH_ARGUMENT_SPEC)
    argument_spec.update(PORTAL_ARGUMENT_SPEC)
    argument_spec.update(
        epns=dict(type="list", elements="str"),
        from_portal=dict(type="bool", default=False),
        from_db=dict(type="bool", default=False),
        order=dict(type="str", default="ASC", choices=["ASC", "DESC"]),
        limit=dict(type="int", default=50),
        import_ignore_file=dict(type="path"),
        epn_cap_map=dict(type="dict", required=True),
        dest_root=dict(type="path", required=True),
        dest_template=dict(type="str", default=DEFAULT_DEST_TEMPLATE),
        source_template=dict(type="str", default=DEFAULT_SOURCE_TEMPLATE),
        rsync_path=dict(type="str", default="rsync"),
        compress=dict(type="bool", default=False),
        bwlimit=dict(type="str"),
        timeout=dict(type="int", default=DEFAULT_IO_TIMEOUT),
        partial_dir=dict(type="str", default=DEFAULT_PARTIAL_DIR),
        protect_args=dict(type="bool", default=True),
        extra_args=dict(type="list", elements="str", default=[]),
        workers=dict(type="int", default=1),
        exit_policy=dict(type="dict", default={}),
        max_attempts=dict(type="int", default=DEFAULT_MAX_ATTEMPTS),
        run_retries=dict(type="int", default=2),
        retry_delay=dict(type="int", default=30),
        retry_max_delay=dict(type="int", default=3600),
        retry_failed=dict(type="bool", default=False),
        missing_source_days=dict(type="int", default=DEFAULT_MISSING_SOURCE_DAYS),
        force=dict(type="bool", default=False),
        claim_ttl=dict(type="int", default=DEFAULT_CLAIM_TTL),
    )
    module = ReplicationModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("epns", "from_portal", "from_db")],
        required_if=[("from_portal", True, ("portal_url", "equipment"))],
    )
    module.run(sync, job=module.params["state_db"])


if __name__ == "__main__":
    main()
