# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""EPN state in the database, and epn_rsync's run: which EPNs, claims, parallel rsync, records.

``EpnStore`` is the one place that reads and writes the ``epns`` and ``rsync_attempts``
tables for the three EPN modules. ``EpnRsyncRun`` is epn_rsync without AnsibleModule: it
is given the options, the state database and a ``runner(argv) -> (rc, stdout, stderr)``
(``RsyncProcesses`` in the module; its ``kill_all``, when the runner has one, is called if the
run ends on an error), so it can be tested alone.

Claims are leases on ``epns`` rows: one conditional UPDATE takes an EPN only when nobody
holds it or the holder's lease has expired, so two runs on different hosts sharing a
PostgreSQL database never sync the same EPN, and a run that dies loses its EPNs to the
next run once ``claim_ttl`` has passed. A live run renews its leases while it works.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid

from ansible_collections.scidata.replication.plugins.module_utils._epn import (
    fetch_visits_to_sync,
    parse_portal_time,
    plan_epn_transfers,
    portal_clients_from_params,
    portal_timezone,
    read_ignore_file,
    validate_epn,
)
from ansible_collections.scidata.replication.plugins.module_utils._errors import (
    ConfigError,
    RsyncError,
)
from ansible_collections.scidata.replication.plugins.module_utils._rsync import (
    STATUS_FAILED,
    STATUS_FATAL,
    STATUS_RETRY,
    STATUS_STOP,
    STATUS_SUCCESS,
    STATUS_WARNING,
    backoff_seconds,
    build_exit_policy,
    build_rsync_argv,
    build_ssh_command,
    check_rsync_version,
    parse_itemized_changes,
    parse_stats,
    remote_source,
    resolve_exit_code,
    tail,
)

STATE_PENDING = "pending"
STATE_RETRY = "retry"
STATE_SYNCED = "synced"
STATE_FAILED = "failed"

DEFAULT_CLAIM_TTL = 300
MINIMUM_CLAIM_TTL = 2
MAX_REPORTED_CHANGES = 1000
STDERR_TAIL_LINES = 20

_HOST_KEY_CHANGED_RE = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed")
_HOST_KEY_FAILED_RE = re.compile(r"Host key verification failed|No \S+ host key is known for")
_AUTH_FAILED_RE = re.compile(r"Permission denied \((publickey|password|keyboard-interactive)")
# ssh could not reach the facility at all: nothing to do with the EPN being synced.
_UNREACHABLE_RE = re.compile(
    r"ssh: connect to host .*?: (Connection refused|Connection timed out|Operation timed out|No route to host|"
    r"Network is unreachable)|ssh: Could not resolve hostname .*|kex_exchange_identification: .*|"
    r"Connection timed out during banner exchange"
)
# rsync's temporary file for NAME is .NAME.XXXXXX beside it; one left behind by a killed rsync
# is never reused or removed by rsync itself.
_RSYNC_TEMP_RE = re.compile(r"\..+\.[A-Za-z0-9]{6}")
STATUS_INTERRUPTED = "interrupted"
DEFAULT_MISSING_SOURCE_DAYS = 7
# rsync (rc 23) when the EPN's folder itself is not on the facility (yet).
_SOURCE_MISSING_RE = re.compile(r'(?:change_dir|link_stat) "(?P<path>[^"\n]*)" failed: No such file or directory')


EARLIER_RSYNC_STOP_SECONDS = 10
_PR_SET_PDEATHSIG = 1
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the process groups are still killed on exit
    _PRCTL = None


def _die_with_parent():
    """In the child before exec: the kernel signals it when the run that started it dies.

    SIGTERM, not SIGKILL: rsync then stops the receiver it forked (which SIGKILL would leave
    running, adopted by init) and keeps the partial file for the next run to resume.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class RsyncProcesses(object):
    """``runner(argv) -> (rc, stdout, stderr)`` whose children live only as long as the run.

    Each child leads its own process group (rsync forks a receiver and ssh) and gets a
    parent-death signal, so a run killed with SIGKILL takes its rsyncs with it; ``kill_all``
    stops the groups still running when the run ends on an error. Output is decoded with
    surrogate escapes, so names that are not UTF-8 keep their bytes.
    """

    def __init__(self, environ_update):
        self.environ = dict(os.environ, **environ_update)
        self.groups = set()
        self.lock = threading.Lock()

    def __call__(self, argv):
        # run_command cannot give the child its own process group and a parent-death signal.
        process = subprocess.Popen(  # pylint: disable=subprocess-popen-preexec-fn,ansible-bad-function
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.environ,
            close_fds=True, start_new_session=True, preexec_fn=_die_with_parent)
        with self.lock:
            self.groups.add(process.pid)
        try:
            out, err = process.communicate()
        finally:
            self._kill_group(process.pid, signal.SIGKILL)  # whatever rsync left behind in its group, too
            process.wait()
            with self.lock:
                self.groups.discard(process.pid)
        return process.returncode, out.decode("utf-8", "surrogateescape"), err.decode("utf-8", "surrogateescape")

    @staticmethod
    def _kill_group(pgid, sig):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill_all(self):
        """Stop every rsync still running (SIGTERM: rsync keeps its partial file); each is then reaped."""
        with self.lock:
            groups = list(self.groups)
        for pgid in groups:
            self._kill_group(pgid, signal.SIGTERM)


def rsyncs_writing_to(destination):
    """PIDs of this user's rsync processes whose destination argument is ``destination``."""
    if not os.path.isdir("/proc"):
        return []
    target = os.fsencode(destination)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat("/proc/" + entry).st_uid != os.getuid():
                continue
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                argv = handle.read().split(b"\0")[:-1]
        except OSError:
            continue
        if len(argv) > 2 and b"rsync" in os.path.basename(argv[0]) and argv[-1] == target:
            found.append(int(entry))
    return found


def stop_earlier_rsyncs(destination, timeout=EARLIER_RSYNC_STOP_SECONDS):
    """Kill every rsync still writing into ``destination`` (left by a run that died); returns their PIDs.

    Called while this run holds the EPN's claim, so no live run of this EPN owns them.
    """
    pids = rsyncs_writing_to(destination)
    for pid in pids:
        try:
            # A group this collection started holds the rsync and its ssh; end it whole.
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + timeout
    while pids and rsyncs_writing_to(destination):
        if time.monotonic() >= deadline:
            writers = ", ".join(str(p) for p in rsyncs_writing_to(destination))
            raise RsyncError("an earlier rsync (pid %s) still writes into %s and could not be stopped; nothing "
                             "was started there" % (writers, destination), path=destination)
        time.sleep(0.1)
    return pids


def run_owner():
    """Who holds a claim: host name, process id and a random run id."""
    return "%s/%d/%s" % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])


def iso(timestamp):
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="seconds")


class EpnStore(object):
    """Reads and writes of the ``epns`` and ``rsync_attempts`` tables."""

    def __init__(self, db):
        self.db = db

    # -- reads --------------------------------------------------------------------------
    def rows(self, epns):
        """``{epn: row}`` for the EPNs that have a row."""
        found = {}
        names = list(dict.fromkeys(epns))
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            if not chunk:
                continue
            for row in self.db.query(
                "SELECT * FROM epns WHERE epn IN (%s)" % ", ".join("?" * len(chunk)), chunk
            ):
                found[row["epn"]] = row
        return found

    def queue(self, states, order="ASC"):
        """Rows in ``states``, oldest (ASC) or newest (DESC) data first."""
        direction = "DESC" if str(order).upper() == "DESC" else "ASC"
        return self.db.query(
            "SELECT * FROM epns WHERE state IN (%s) ORDER BY COALESCE(newest_mtime, 0) %s, epn ASC"
            % (", ".join("?" * len(states)), direction),
            list(states),
        )

    def attempts(self, epn):
        return self.db.query("SELECT * FROM rsync_attempts WHERE epn = ? ORDER BY id", (epn,))

    # -- epn_rsync ----------------------------------------------------------------------
    def record_candidates(self, jobs, now):
        """Insert new EPNs as pending and refresh what the portal and plan say about known ones."""
        with self.db.transaction():
            for job in jobs:
                self.db.execute(
                    "INSERT INTO epns (epn, beamline, visit_start, visit_end, principal_scientist, data_scientists, "
                    "project, source_path, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (epn) DO UPDATE SET "
                    "beamline = COALESCE(excluded.beamline, epns.beamline), "
                    "visit_start = COALESCE(excluded.visit_start, epns.visit_start), "
                    "visit_end = COALESCE(excluded.visit_end, epns.visit_end), "
                    "principal_scientist = COALESCE(excluded.principal_scientist, epns.principal_scientist), "
                    "data_scientists = COALESCE(excluded.data_scientists, epns.data_scientists), "
                    "project = excluded.project, source_path = excluded.source_path, updated_at = excluded.updated_at",
                    (job["epn"], job.get("beamline"), job.get("visit_start"), job.get("visit_end"),
                     job.get("principal_scientist"), job.get("data_scientists"), job["project"],
                     job["source_path"], STATE_PENDING, now, now),
                )

    def import_synced(self, epns, now):
        """Mark EPNs synced by an earlier tool; only new rows and untouched pending ones change."""
        imported = []
        with self.db.transaction():
            for epn in epns:
                count = self.db.execute(
                    "INSERT INTO epns (epn, state, created_at, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (epn) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at "
                    "WHERE epns.state = ? AND epns.attempts = 0",
                    (epn, STATE_SYNCED, now, now, STATE_PENDING),
                )
                if count:
                    imported.append(epn)
        return imported

    def claim(self, epn, owner, ttl, now, states, respect_backoff=True):
        """Take the lease on ``epn`` if it is in ``states`` and nobody else holds a live lease."""
        sql = (
            "UPDATE epns SET claimed_by = ?, claim_expires_at = ?, updated_at = ?, "
            "attempts = CASE WHEN state IN (?, ?) THEN 0 ELSE attempts END "
            "WHERE epn = ? AND state IN (%s) "
            "AND (claimed_by IS NULL OR claimed_by = ? OR claim_expires_at IS NULL OR claim_expires_at < ?)"
            % ", ".join("?" * len(states))
        )
        params = [owner, now + ttl, now, STATE_FAILED, STATE_SYNCED, epn] + list(states) + [owner, now]
        if respect_backoff:
            sql += " AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
            params.append(now)
        return self.db.execute(sql, params) == 1

    def requeue(self, epn, now):
        """A synced EPN is pending again, with a fresh attempt count (a later visit brought new data)."""
        return self.db.execute("UPDATE epns SET state = ?, attempts = 0, next_attempt_at = NULL, updated_at = ? "
                               "WHERE epn = ? AND state = ?", (STATE_PENDING, now, epn, STATE_SYNCED))

    def refund_attempt(self, epn, owner):
        """Take back the attempt counted at the start, keeping the lease (a run-level failure)."""
        return self.db.execute("UPDATE epns SET attempts = attempts - 1 WHERE epn = ? AND claimed_by = ? "
                               "AND attempts > 0", (epn, owner))

    def renew(self, owner, ttl, now):
        return self.db.execute("UPDATE epns SET claim_expires_at = ? WHERE claimed_by = ?", (now + ttl, owner))

    def release_all(self, owner):
        return self.db.execute("UPDATE epns SET claimed_by = NULL, claim_expires_at = NULL WHERE claimed_by = ?",
                               (owner,))

    def start_attempt(self, epn, owner, now):
        """Count one more attempt and open its record; returns ``(attempt id, attempts so far)``."""
        with self.db.transaction():
            self.db.execute("UPDATE epns SET attempts = attempts + 1, updated_at = ? WHERE epn = ?", (now, epn))
            self.db.execute("INSERT INTO rsync_attempts (epn, host, started_at) VALUES (?, ?, ?)", (epn, owner, now))
            attempt_id = self.db.scalar(
                "SELECT MAX(id) FROM rsync_attempts WHERE epn = ? AND host = ? AND started_at = ?", (epn, owner, now))
            attempts = self.db.scalar("SELECT attempts FROM epns WHERE epn = ?", (epn,))
        return attempt_id, attempts

    def finish_attempt(self, attempt_id, now, rc, nbytes, files, stderr_tail):
        self.db.execute(
            "UPDATE rsync_attempts SET ended_at = ?, rc = ?, bytes = ?, files = ?, stderr_tail = ? WHERE id = ?",
            (now, rc, nbytes, files, stderr_tail, attempt_id),
        )

    def settle(self, epn, owner, now, state=None, last_rc=None, next_attempt_at=None, synced_bytes=None,
               refund_attempt=False):
        """Record the outcome and release the lease; returns False if the lease was lost.

        ``refund_attempt`` takes back the attempt counted at the start, for failures that are
        not the EPN's (SSH host key or login).
        """
        if state == STATE_SYNCED:
            sql = ("UPDATE epns SET state = ?, attempts = 0, next_attempt_at = NULL, last_rc = ?, "
                   "bytes_transferred = ?, last_synced_at = ?, claimed_by = NULL, claim_expires_at = NULL, "
                   "updated_at = ? WHERE epn = ? AND claimed_by = ?")
            params = (state, last_rc, synced_bytes, now, now, epn, owner)
        elif state is not None:
            sql = ("UPDATE epns SET state = ?, next_attempt_at = ?, last_rc = ?, claimed_by = NULL, "
                   "claim_expires_at = NULL, updated_at = ? WHERE epn = ? AND claimed_by = ?")
            params = (state, next_attempt_at, last_rc, now, epn, owner)
        else:
            sql = ("UPDATE epns SET last_rc = COALESCE(?, last_rc), claimed_by = NULL, claim_expires_at = NULL, "
                   "attempts = CASE WHEN ? = 1 AND attempts > 0 THEN attempts - 1 ELSE attempts END, "
                   "updated_at = ? WHERE epn = ? AND claimed_by = ?")
            params = (last_rc, 1 if refund_attempt else 0, now, epn, owner)
        return self.db.execute(sql, params) == 1

    # -- epn_alert ----------------------------------------------------------------------
    def alerted(self, epns):
        return {epn: row["alerted_at"] for epn, row in self.rows(epns).items()}

    def mark_alerted(self, epns, now):
        with self.db.transaction():
            for epn in epns:
                self.db.execute(
                    "INSERT INTO epns (epn, state, alerted_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (epn) DO UPDATE SET alerted_at = excluded.alerted_at, updated_at = excluded.updated_at",
                    (epn, STATE_PENDING, now, now, now),
                )

    # -- epn_inventory ------------------------------------------------------------------
    @staticmethod
    def inventory_changes(found, existing):
        """Compare walked EPNs with their rows: ``(added, updated, unchanged, requeued)`` names."""
        added, updated, unchanged, requeued = [], [], [], []
        for item in found:
            row = existing.get(item["epn"])
            if row is None:
                added.append(item["epn"])
                continue
            same = all(
                row.get(key) == item[key] or (key == "newest_mtime" and row.get(key) is not None and item[key] is not None
                                              and abs(float(row[key]) - float(item[key])) < 1e-6)
                for key in ("source_path", "size_bytes", "file_count", "newest_mtime", "beamline")
            )
            if same:
                unchanged.append(item["epn"])
                continue
            updated.append(item["epn"])
            content_changed = any(row.get(key) != item[key] for key in ("size_bytes", "file_count")) or (
                row.get("newest_mtime") is not None and item["newest_mtime"] is not None
                and float(item["newest_mtime"]) > float(row["newest_mtime"]) + 1e-6)
            if row.get("state") == STATE_SYNCED and content_changed and row.get("newest_mtime") is not None:
                requeued.append(item["epn"])
        return added, updated, unchanged, requeued

    def record_inventory(self, found, added, updated, requeued, now):
        by_name = {item["epn"]: item for item in found}
        with self.db.transaction():
            for epn in added:
                item = by_name[epn]
                self.db.execute(
                    "INSERT INTO epns (epn, beamline, source_path, size_bytes, file_count, newest_mtime, state, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (epn) DO UPDATE SET beamline = excluded.beamline, source_path = excluded.source_path, "
                    "size_bytes = excluded.size_bytes, file_count = excluded.file_count, "
                    "newest_mtime = excluded.newest_mtime, updated_at = excluded.updated_at",
                    (epn, item["beamline"], item["source_path"], item["size_bytes"], item["file_count"],
                     item["newest_mtime"], STATE_PENDING, now, now),
                )
            for epn in updated:
                item = by_name[epn]
                self.db.execute(
                    "UPDATE epns SET beamline = ?, source_path = ?, size_bytes = ?, file_count = ?, newest_mtime = ?, "
                    "updated_at = ? WHERE epn = ?",
                    (item["beamline"], item["source_path"], item["size_bytes"], item["file_count"],
                     item["newest_mtime"], now, epn),
                )
            for epn in requeued:
                self.db.execute(
                    "UPDATE epns SET state = ?, attempts = 0, next_attempt_at = NULL, updated_at = ? "
                    "WHERE epn = ? AND state = ?",
                    (STATE_PENDING, now, epn, STATE_SYNCED),
                )


def unreachable(stderr):
    """The line of ssh's stderr that says the facility could not be reached, or None."""
    match = _UNREACHABLE_RE.search(stderr or "")
    return match.group(0).strip() if match else None


def remove_stale_temp_files(root):
    """Remove the temporary files killed rsyncs left under ``root``; returns their paths.

    Call only when no rsync writes into ``root``. The default filter excludes dotfiles
    other than ``.info`` from the source, so a ``.NAME.XXXXXX`` here is always rsync's.
    """
    removed = []
    for directory, _dirs, files in os.walk(os.fsencode(root)):
        for name in files:
            text = os.fsdecode(name)
            if _RSYNC_TEMP_RE.fullmatch(text):
                path = os.path.join(directory, name)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                removed.append(os.fsdecode(path))
    return removed


def source_missing(stderr, source_path):
    """Whether rsync's stderr says the EPN folder ``source_path`` itself does not exist."""
    wanted = source_path.rstrip("/")
    return any(match.group("path").rstrip("/") in (wanted, wanted + "/.")
               for match in _SOURCE_MISSING_RE.finditer(stderr or ""))


def ssh_problem(stderr, host, port, user, known_hosts_file):
    """A run-wide SSH failure in rsync's stderr (host key, authentication), or None.

    These are configuration problems: retrying or moving to the next EPN cannot help.
    """
    known = known_hosts_file or "the user's known_hosts"
    if _HOST_KEY_CHANGED_RE.search(stderr):
        return ("the SSH host key of %s:%d does not match the one in %s; refusing to connect (the server was "
                "re-keyed or someone is in the middle). Check the new key out of band, then update "
                "known_hosts_file (for example with ansible.builtin.known_hosts)." % (host, port, known))
    if _HOST_KEY_FAILED_RE.search(stderr):
        return ("the SSH host key of %s:%d could not be verified against %s (unknown host keys are never "
                "accepted); add the key after checking it out of band." % (host, port, known))
    if _AUTH_FAILED_RE.search(stderr):
        return "SSH authentication as %s@%s:%d failed (permission denied); check user and key_file" % (
            user, host, port)
    return None


class EpnRsyncRun(object):
    """One run of epn_rsync. ``run()`` returns the result dict or raises RsyncError with it."""

    def __init__(self, params, db, runner, check_mode=False, diff_mode=False, warn=None, progress=None,
                 clock=time.time, owner=None):
        self.params = params
        self.store = EpnStore(db)
        self.runner = runner
        self.check_mode = check_mode
        self.diff_mode = diff_mode
        self.warn = warn or (lambda message: None)
        self.progress = progress or (lambda event: None)
        self.clock = clock
        self.owner = owner or run_owner()
        self.entries = {}
        # Not "failed" or "skipped": Ansible reads those keys as the task's own status.
        self.result = dict(changed=False, epns=[], synced=[], failed_epns=[], retrying=[], skipped_epns=[], rejected=[],
                           unmapped=[], held_back=[], imported=[], interrupted=[], requeued=[], stopped=False)
        self.run_error = None
        self.stop = False

    # -- settings -----------------------------------------------------------------------
    def _settings(self):
        p = self.params
        chosen = [name for name, on in (("epns", p.get("epns") is not None), ("from_portal", p.get("from_portal")),
                                        ("from_db", p.get("from_db"))) if on]
        if len(chosen) != 1:
            raise ConfigError("choose the EPNs with exactly one of epns, from_portal=true or from_db=true (got %s)"
                              % (", ".join(chosen) or "none"), option="epns")
        for name, minimum in (("workers", 1), ("max_attempts", 1), ("run_retries", 0), ("retry_delay", 0),
                              ("retry_max_delay", 0), ("limit", 1), ("missing_source_days", 0)):
            if p.get(name) is not None and p[name] < minimum:
                raise ConfigError("%s must be at least %d" % (name, minimum), option=name)
        if p["claim_ttl"] < MINIMUM_CLAIM_TTL:
            raise ConfigError("claim_ttl must be at least %d seconds" % MINIMUM_CLAIM_TTL, option="claim_ttl")
        self.policy = build_exit_policy(p.get("exit_policy"))
        self.ssh_command = build_ssh_command(
            port=p["port"],
            key_file=p.get("key_file"),
            known_hosts_file=p.get("known_hosts_file"),
            connect_timeout=p["connect_timeout"],
            server_alive_interval=p["server_alive_interval"],
            server_alive_count_max=p["server_alive_count_max"],
        )
        states = [STATE_PENDING, STATE_RETRY]
        if p["retry_failed"]:
            states.append(STATE_FAILED)
        if p["force"]:
            states.append(STATE_SYNCED)
        self.claim_states = states

    def _argv(self, job):
        p = self.params
        return build_rsync_argv(
            remote_source(p["user"], p["host"], job["source_path"]),
            job["dest_path"],
            rsync_path=p["rsync_path"],
            ssh_command=self.ssh_command,
            check_mode=self.check_mode,
            compress=p["compress"],
            bwlimit=p.get("bwlimit"),
            timeout=p["timeout"],
            partial_dir=p["partial_dir"],
            protect_args=p["protect_args"],
            extra_args=p.get("extra_args"),
        )

    def _rsync_version(self):
        try:
            rc, out, err = self.runner([self.params["rsync_path"], "--version"])
        except Exception as exc:  # pylint: disable=broad-except
            raise RsyncError("cannot run %s --version: %s" % (self.params["rsync_path"], exc)) from None
        if rc != 0:
            raise RsyncError("%s --version failed with rc %s: %s" % (self.params["rsync_path"], rc, tail(err, 3)))
        info = check_rsync_version(out)
        for message in info["warnings"]:
            self.warn(message)
        self.result["rsync_version"] = info["version"]

    # -- which EPNs ---------------------------------------------------------------------
    def _import_ignore_file(self, now):
        path = self.params.get("import_ignore_file")
        if not path:
            return set()
        names = []
        for name in read_ignore_file(path):
            problem = validate_epn(name, self.params["epn_pattern"])
            if problem:
                self.result["rejected"].append({"epn": name, "reason": "EPN %s (in import_ignore_file)" % problem})
            else:
                names.append(name)
        names = list(dict.fromkeys(names))
        if self.check_mode:
            rows = self.store.rows(names)
            imported = [n for n in names if n not in rows or (rows[n]["state"] == STATE_PENDING
                                                              and not rows[n]["attempts"])]
        else:
            imported = self.store.import_synced(names, now)
        self.result["imported"] = imported
        return set(imported)

    def _plan(self, names, beamline, meta=None):
        p = self.params
        plan = plan_epn_transfers(
            names, p["epn_cap_map"], p["dest_root"], p["src_prefix"], beamline=beamline,
            dest_template=p["dest_template"], source_template=p["source_template"], epn_pattern=p["epn_pattern"],
        )
        self.result["rejected"].extend(plan["rejected"])
        self.result["unmapped"].extend(plan["unmapped"])
        jobs = []
        for transfer in plan["transfers"]:
            job = dict(transfer, beamline=beamline)
            job.update((meta or {}).get(transfer["epn"], {}))
            jobs.append(job)
        return jobs

    def _candidates(self):
        p = self.params
        if p["from_db"]:
            jobs = []
            for row in self.store.queue(self.claim_states, p["order"]):
                jobs.extend(self._plan([row["epn"]], row.get("beamline") or p.get("beamline")))
            return jobs
        if p["from_portal"]:
            clients = portal_clients_from_params(p, warn=self.warn)
            portal_tz = portal_timezone(p["portal_timezone"])
            selection = fetch_visits_to_sync(clients, datetime.datetime.now(datetime.timezone.utc),
                                             p["visit_day_range"], portal_tz)
            self.result["held_back"] = selection["skipped"]
            self.result["current_start"] = selection["current_start"]
            meta = {}
            for visit in selection["visits"]:
                meta[visit["epn"]] = _visit_meta(visit, portal_tz)
            return self._plan([visit["epn"] for visit in selection["visits"]], p.get("beamline"), meta)
        return self._plan(p["epns"], p.get("beamline"))

    def _eligible(self, jobs, imported, now):
        """Drop EPNs the database says to leave alone, with the reason."""
        rows = self.store.rows([job["epn"] for job in jobs])
        p = self.params
        eligible = []
        for job in jobs:
            row = rows.get(job["epn"])
            reason = None
            if job["epn"] in imported and not p["force"]:
                reason = "already synced (imported from import_ignore_file)"
            elif self._later_visit(job, row):
                # Users come back: a visit that ended after the last sync brings new data.
                if not self.check_mode:
                    self.store.requeue(job["epn"], now)
                self.result["requeued"].append(job["epn"])
            elif row is not None:
                reason = self._skip_reason(row, now)
            if reason:
                self.result["skipped_epns"].append({"epn": job["epn"], "reason": reason})
            else:
                eligible.append(job)
        if p["from_db"]:
            eligible = eligible[:p["limit"]] if self.check_mode else eligible
        return eligible

    @staticmethod
    def _later_visit(job, row):
        """Whether ``job`` (from the portal) is a visit of a synced EPN that ended after its last sync."""
        return (row is not None and row["state"] == STATE_SYNCED and job.get("visit_end") is not None
                and row.get("last_synced_at") is not None and job["visit_end"] > row["last_synced_at"])

    def _skip_reason(self, row, now):
        p = self.params
        state = row["state"]
        if state == STATE_SYNCED and not p["force"]:
            return "already synced%s" % (" at %s" % iso(row["last_synced_at"]) if row.get("last_synced_at") else "")
        if state == STATE_FAILED and not p["retry_failed"]:
            return "failed after %s attempt(s) (last rc %s); set retry_failed to try again" % (
                row["attempts"], row["last_rc"])
        if state not in (STATE_PENDING, STATE_RETRY, STATE_FAILED, STATE_SYNCED):
            return "state %s" % state
        if state == STATE_RETRY and row.get("next_attempt_at") and row["next_attempt_at"] > now and not p["force"]:
            return "waiting until %s before the next attempt (backoff)" % iso(row["next_attempt_at"])
        if row.get("claimed_by") and row["claimed_by"] != self.owner and (row.get("claim_expires_at") or 0) >= now:
            return "claimed by %s until %s" % (row["claimed_by"], iso(row["claim_expires_at"]))
        return None

    # -- the run ------------------------------------------------------------------------
    def run(self):
        self._settings()
        self._rsync_version()
        now = self.clock()
        imported = self._import_ignore_file(now)
        jobs = self._eligible(self._candidates(), imported, now)
        for index, job in enumerate(jobs):
            job["index"] = index
            job["argv"] = self._argv(job)
            job["source"] = remote_source(self.params["user"], self.params["host"], job["source_path"])
            job["run_attempts"] = 0
        self.progress({"event": "plan", "eligible": len(jobs), "skipped": len(self.result["skipped_epns"]),
                       "rejected": len(self.result["rejected"]), "unmapped": len(self.result["unmapped"])})
        if not self.check_mode and jobs and not self.params["from_db"]:
            self.store.record_candidates(jobs, now)
        try:
            self._loop(jobs)
        finally:
            if not self.check_mode:
                self.store.release_all(self.owner)
        return self._finish()

    def _loop(self, jobs):
        workers = self.params["workers"]
        limit = self.params["limit"] if self.params["from_db"] and not self.check_mode else None
        heartbeat = max(1.0, self.params["claim_ttl"] / 3.0)
        queue = list(jobs)
        delayed = []
        running = {}
        claimed = 0
        last_renewal = self.clock()
        # Threads, not processes: each only waits for its rsync (RsyncProcesses reads stdout and
        # stderr together, so a chatty stderr cannot block rsync). Every database call stays on
        # this thread (SQLite connections belong to the thread that made them).
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                while True:
                    while len(running) < workers and not self.stop:
                        job = self._next_job(queue, delayed, limit is not None and claimed >= limit)
                        if job is None:
                            break
                        if job.get("claimed_now"):
                            claimed += 1
                            job["claimed_now"] = False
                        if not self._start(job):
                            continue
                        running[pool.submit(self._execute, job)] = job
                    if not running:
                        if self.stop or not delayed:
                            break
                        wait = min(j["ready_at"] for j in delayed) - self.clock()
                        if wait > 0:
                            time.sleep(min(wait, heartbeat))
                    else:
                        timeout = heartbeat
                        if delayed:
                            timeout = max(0.05, min(timeout, min(j["ready_at"] for j in delayed) - self.clock()))
                        done, _pending = concurrent.futures.wait(
                            list(running), timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)
                        for future in done:
                            job = running.pop(future)
                            self._handle(job, future.result(), delayed)
                    if not self.check_mode and self.clock() - last_renewal >= heartbeat:
                        self.store.renew(self.owner, self.params["claim_ttl"], self.clock())
                        last_renewal = self.clock()
            except BaseException:
                # Leaving the pool waits for its threads: end their rsyncs first, not after.
                stop_processes = getattr(self.runner, "kill_all", None)
                if stop_processes is not None:
                    stop_processes()
                raise
            for job in delayed:
                # The run stopped while these waited for a retry: leave them for the next run.
                if job.get("unreachable"):
                    # Their last attempt was refunded: they stay as they were.
                    self._entry(job)["status"] = STATUS_INTERRUPTED
                    self._settle(job, None, job.get("last_rc"))
                else:
                    self._settle(job, STATE_RETRY, job.get("last_rc"), next_attempt_at=job["ready_at"])

    def _next_job(self, queue, delayed, limit_reached):
        now = self.clock()
        ready = [job for job in delayed if job["ready_at"] <= now]
        if ready:
            job = min(ready, key=lambda j: j["ready_at"])
            delayed.remove(job)
            return job
        while queue and not limit_reached:
            job = queue.pop(0)
            if self.check_mode:
                return job
            if self.store.claim(job["epn"], self.owner, self.params["claim_ttl"], now, self.claim_states,
                                respect_backoff=not self.params["force"]):
                job["claimed_now"] = True
                return job
            row = self.store.rows([job["epn"]]).get(job["epn"])
            reason = self._skip_reason(row, now) if row else None
            self.result["skipped_epns"].append({"epn": job["epn"], "reason": reason or "taken by another run"})
        return None

    def _start(self, job):
        now = self.clock()
        job["run_attempts"] += 1
        if not self.check_mode:
            parent = os.path.dirname(job["dest_path"].rstrip("/"))
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                self._entry(job).update(status=STATUS_FATAL, rc=None, meaning="cannot create %s: %s" % (parent, exc))
                self.store.settle(job["epn"], self.owner, now, state=STATE_FAILED)
                return False
            job["attempt_id"], job["attempts"] = self.store.start_attempt(job["epn"], self.owner, now)
            stopped = stop_earlier_rsyncs(job["dest_path"])
            if stopped:
                self.warn("stopped an earlier rsync (pid %s) still writing into %s" % (
                    ", ".join(str(pid) for pid in stopped), job["dest_path"]))
            removed = remove_stale_temp_files(job["dest_path"])
            if removed:
                entry = self._entry(job)
                entry["stale_temp_files_removed"] = entry.get("stale_temp_files_removed", 0) + len(removed)
        else:
            job["attempts"] = job["run_attempts"]
        job["started_at"] = now
        self.progress({"event": "start", "epn": job["epn"], "attempt": job["attempts"], "source": job["source"],
                       "destination": job["dest_path"]})
        return True

    def _execute(self, job):
        """Run one rsync (in a worker thread); never raises."""
        started = time.monotonic()
        try:
            rc, out, err = self.runner(job["argv"])
        # A fail_json (SystemExit) from a worker thread would otherwise vanish with the thread.
        except BaseException as exc:  # pylint: disable=broad-except
            rc, out, err = None, "", "cannot run %s: %s" % (job["argv"][0], exc)
        return rc, out or "", err or "", time.monotonic() - started

    def _entry(self, job):
        entry = self.entries.get(job["epn"])
        if entry is None:
            entry = self.entries[job["epn"]] = {
                "index": job["index"], "epn": job["epn"], "project": job["project"], "source": job["source"],
                "destination": job["dest_path"], "attempts": 0,
            }
            self.result["epns"].append(entry)
        return entry

    def _handle(self, job, outcome, delayed):
        rc, out, err, seconds = outcome
        now = self.clock()
        stats = parse_stats(out)
        changes = parse_itemized_changes(out)
        nbytes = stats.get("total_transferred_file_size")
        files = stats.get("regular_files_transferred")
        err_tail = tail(err, STDERR_TAIL_LINES)
        if not self.check_mode:
            self.store.finish_attempt(job["attempt_id"], now, rc, nbytes, files, err_tail)
        entry = self._entry(job)
        entry["attempts"] += 1
        entry.update(rc=rc, stats=stats, files=files, bytes=nbytes, seconds=round(seconds, 3),
                     changes_total=len(changes))
        if self.check_mode or self.diff_mode:
            entry["changes"] = changes[:MAX_REPORTED_CHANGES]
        job["last_rc"] = rc

        problem = None
        if rc is None:
            problem = err
        elif rc > 0:
            p = self.params
            problem = ssh_problem(err, p["host"], p["port"], p["user"], p.get("known_hosts_file"))
            down = None if problem else unreachable(err)
            job["unreachable"] = bool(down)
            if down:
                problem = "facility unreachable: %s" % down
                if job["run_attempts"] <= self.params["run_retries"] and not self.stop and not self.check_mode:
                    # Try again in this run; the attempt is not the EPN's.
                    self.store.refund_attempt(job["epn"], self.owner)
                    job["attempts"] -= 1
                    job["ready_at"] = now + backoff_seconds(job["run_attempts"], self.params["retry_delay"], 2,
                                                            self.params["retry_max_delay"])
                    delayed.append(job)
                    entry.update(status="retrying", meaning=problem, stderr_tail=err_tail)
                    self._progress_done(job, entry)
                    return
        if problem:
            # Not this EPN's fault: its state and attempt count stay as they were, and the run stops.
            entry.update(status=STATUS_INTERRUPTED, meaning=problem, stderr_tail=err_tail)
            self.run_error = self.run_error or problem
            self.stop = True
            self._settle(job, None, rc, refund_attempt=True)
            self._progress_done(job, entry)
            return

        if rc == 23 and source_missing(err, job["source_path"]):
            self._source_missing(job, entry, now, err_tail)
            return

        decision = resolve_exit_code(rc, job["attempts"], self.policy, self.params["max_attempts"])
        status = decision["status"]
        entry.update(status=status, meaning=decision["meaning"])
        if status not in (STATUS_SUCCESS,):
            entry["stderr_tail"] = err_tail
        if status in (STATUS_SUCCESS, STATUS_WARNING):
            entry.pop("next_attempt_at", None)
            if status == STATUS_WARNING:
                entry["warning"] = "rsync exit code %s (%s): %s" % (rc, decision["meaning"], tail(err, 3))
            self._settle(job, STATE_SYNCED, rc, synced_bytes=nbytes)
        elif status == STATUS_RETRY and not self.check_mode:
            delay = backoff_seconds(job["run_attempts"], self.params["retry_delay"], 2, self.params["retry_max_delay"])
            if job["run_attempts"] <= self.params["run_retries"] and not self.stop:
                job["ready_at"] = now + delay
                delayed.append(job)
                entry["status"] = "retrying"
            else:
                later = backoff_seconds(job["attempts"], self.params["retry_delay"], 2, self.params["retry_max_delay"])
                entry["next_attempt_at"] = iso(now + later)
                self._settle(job, STATE_RETRY, rc, next_attempt_at=now + later)
        elif status == STATUS_STOP:
            # An operator or shutdown stopped rsync: nothing about the EPN, so no attempt counted.
            self.stop = True
            self.result["stopped"] = True
            self._settle(job, None, rc, refund_attempt=True)
        elif status in (STATUS_FAILED, STATUS_FATAL):
            self._settle(job, STATE_FAILED, rc)
        else:  # a retry in check mode: report it, nothing to record
            self._settle(job, None, rc)
        self._progress_done(job, entry)

    def _source_missing(self, job, entry, now, err_tail):
        """The EPN's folder is not on the facility yet: retry on later runs, up to missing_source_days.

        The portal may list a visit before the facility creates its folder; such a run is not
        counted as an attempt. The days count from when the EPN was first queued.
        """
        days = self.params["missing_source_days"]
        row = None if self.check_mode else self.store.rows([job["epn"]]).get(job["epn"])
        first_seen = row["created_at"] if row and row.get("created_at") else now
        entry["stderr_tail"] = err_tail
        if now - first_seen >= days * 86400:
            entry.update(status=STATUS_FAILED, meaning="source folder %s still missing %s day(s) after the EPN was "
                         "first queued (missing_source_days)" % (job["source_path"], days))
            self._settle(job, STATE_FAILED, job["last_rc"])
        else:
            entry.update(status=STATUS_RETRY, meaning="source folder %s does not exist yet; later runs look again "
                         "until %s" % (job["source_path"], iso(first_seen + days * 86400)))
            if not self.check_mode:
                self.store.refund_attempt(job["epn"], self.owner)
            self._settle(job, STATE_RETRY, job["last_rc"], next_attempt_at=now)
        self._progress_done(job, entry)

    def _progress_done(self, job, entry):
        self.progress({"event": "finish", "epn": job["epn"], "attempt": job["attempts"], "rc": entry.get("rc"),
                       "status": entry.get("status"), "files": entry.get("files"), "bytes": entry.get("bytes"),
                       "seconds": entry.get("seconds")})

    def _settle(self, job, state, rc, next_attempt_at=None, synced_bytes=None, refund_attempt=False):
        if self.check_mode:
            return
        if not self.store.settle(job["epn"], self.owner, self.clock(), state=state, last_rc=rc,
                                 next_attempt_at=next_attempt_at, synced_bytes=synced_bytes,
                                 refund_attempt=refund_attempt):
            self.warn("the claim on EPN %s expired and another run took it over before this run finished; raise "
                      "claim_ttl" % job["epn"])

    # -- the result ---------------------------------------------------------------------
    def _finish(self):
        result = self.result
        result["epns"].sort(key=lambda entry: entry.pop("index"))
        for entry in result["epns"]:
            status = entry.get("status")
            if status in (STATUS_SUCCESS, STATUS_WARNING):
                result["synced"].append(entry["epn"])
            elif status in (STATUS_FAILED, STATUS_FATAL):
                result["failed_epns"].append(entry["epn"])
            elif status in (STATUS_RETRY, "retrying"):
                result["retrying"].append(entry["epn"])
            elif status == STATUS_INTERRUPTED:
                result["interrupted"].append(entry["epn"])
            if entry.get("warning"):
                self.warn("EPN %s: %s" % (entry["epn"], entry["warning"]))
        if self.check_mode:
            result["changed"] = any(entry.get("changes_total") for entry in result["epns"]) or bool(result["imported"])
        else:
            result["changed"] = bool(result["epns"]) or bool(result["imported"])
        if self.diff_mode:
            lines = []
            for entry in result["epns"]:
                lines.extend("%s: %s %s" % (entry["epn"], c["flags"], c["path"]) for c in entry.get("changes", []))
            result["diff"] = {"prepared": "\n".join(lines) + ("\n" if lines else "")}
        if result["unmapped"]:
            self.warn("EPNs without a project in epn_cap_map (not synced): %s" % ", ".join(result["unmapped"]))
        problems = []
        if self.run_error:
            problems.append(self.run_error)
        if result["stopped"]:
            problems.append("rsync was told to stop (exit code 20); the run stopped")
        if result["failed_epns"]:
            problems.append("EPNs failed: %s" % ", ".join(
                "%s (rc %s: %s)" % (e["epn"], e.get("rc"), e.get("meaning")) for e in result["epns"]
                if e["epn"] in result["failed_epns"]))
        counts = "%d synced, %d failed, %d to retry, %d skipped, %d rejected, %d unmapped" % (
            len(result["synced"]), len(result["failed_epns"]), len(result["retrying"]), len(result["skipped_epns"]),
            len(result["rejected"]), len(result["unmapped"]))
        if result["interrupted"]:
            counts += ", %d interrupted (state unchanged)" % len(result["interrupted"])
        waiting = set(result["retrying"]) | set(s["epn"] for s in result["skipped_epns"] if "(backoff)" in s["reason"])
        result["all_waiting"] = bool(waiting) and not (result["synced"] or result["failed_epns"] or problems)
        if result["all_waiting"]:
            counts = "nothing synced: every EPN to do waits for a retry (%s); " % ", ".join(sorted(waiting)) + counts
            self.warn("every EPN to do waits for a retry: %s" % ", ".join(sorted(waiting)))
        if problems:
            raise RsyncError("; ".join(problems) + " (%s)" % counts, **result)
        result["msg"] = ("check mode: " if self.check_mode else "") + counts
        return result


def _visit_meta(visit, portal_tz):
    meta = {}
    for key, column in (("start_time", "visit_start"), ("end_time", "visit_end")):
        try:
            meta[column] = parse_portal_time(visit.get(key), portal_tz).timestamp()
        except ValueError:
            meta[column] = None
    if isinstance(visit.get("principal_scientist"), dict):
        meta["principal_scientist"] = json.dumps(visit["principal_scientist"], sort_keys=True)
    if isinstance(visit.get("data_scientists"), list):
        meta["data_scientists"] = json.dumps(visit["data_scientists"], sort_keys=True)
    return meta
