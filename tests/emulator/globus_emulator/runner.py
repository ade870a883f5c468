# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Executes one task's plan: real copies and deletes, sync checks, events, injected faults.

The plan and its cursor live on the task, so a runner that lets go (pause, INACTIVE, shutdown)
can be replaced later by another one that continues at the same operation.  Bookkeeping happens
under the state lock; bytes are copied outside it.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import time

from .faults import SKIPPABLE_CODES
from .model import PAUSED_DEADLINE, pause_rule
from .planner import DeletePlanner, TaskError, TransferPlanner, describe, match_filter_rules
from .util import file_checksum, iso, now

CHUNK = 1 << 20
VERIFY_ATTEMPTS = 5  # copies of one file whose checksum must match before the task fails (the service retries longer)
STARTED_DETAILS = {"type": "GridFTP Transfer", "concurrency": 2, "parallelism": 4, "pipelining": 20}


class Stop(Exception):
    """The runner must let go of the task (shutdown, reset, pause or park)."""


# ---------------------------------------------------------------- terminal helpers (lock held)


def finish_canceled(task):
    task.add_event("CANCELED", "canceled", "Canceled by the task owner", True)
    task.finish("FAILED", {"code": "CANCELED", "description": "canceled"})


def finish_expired(task):
    task.add_event("EXPIRED", "expired", f"The task deadline ({iso(task.deadline)}) has passed", True)
    task.finish("FAILED", {"code": "EXPIRED", "description": "expired"})


def finish_fatal(task, code, description, details):
    task.add_event(code, description, details, True)
    task.finish("FAILED", {"code": code, "description": description})


def park_paused(task, message, nice_status, collection_id=None):
    """Pause the task as a pause rule on one of its collections does (the destination unless named)."""
    task.is_paused = True
    task.phase = "paused"
    task.problem = (nice_status, "paused", message)
    collections = [c for c in (task.destination, task.source) if c]
    paused_on = next((c for c in collections if c.id == str(collection_id or "").lower()), collections[0])
    task.pause_rule = pause_rule(paused_on, message, task.type)
    task.add_event("PAUSED", "paused", message, True)
    if not task.user_deadline:
        task.deadline = now() + PAUSED_DEADLINE


# ---------------------------------------------------------------- the runner


class Runner:
    """Executes one task's plan from its cursor until done, parked or told to stop."""

    def __init__(self, state, task, stopping):
        self.state = state
        self.task = task
        self.stopping = stopping
        self.rate = None
        self.progress_start = now()
        self.progress_bytes = 0
        self.corruptions = 0  # copies a ``corrupt`` fault still damages

    # ------------------------------------------------------------ control

    def check(self):
        """Raise Stop, or finish the task, when something outside asks the runner to let go."""
        task = self.task
        if self.stopping.is_set() or task.discard:
            raise Stop()
        with self.state.lock:
            if task.cancel_requested:
                self.flush_progress()
                finish_canceled(task)
                raise Stop()
            if now() > task.deadline:
                self.flush_progress()
                finish_expired(task)
                raise Stop()
            message = task.pause_request
            if message:
                task.pause_request = None
                self.flush_progress()
                park_paused(task, message, "PAUSED")
                raise Stop()

    def sleep(self, seconds):
        end = time.monotonic() + seconds
        while True:
            self.check()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    # ------------------------------------------------------------ main loop

    def run(self):
        task, state = self.task, self.state
        with state.lock:
            if not task.is_paused:
                task.problem = None
            if task.first_start is None:
                task.first_start = now()
                task.add_event("STARTED", "started", STARTED_DETAILS, False)
        try:
            self.check()
            if task.plan is None:
                if not self.build_plan():
                    return
            self.execute()
        except Stop:
            return

    def build_plan(self):
        task, state = self.task, self.state
        planner = TransferPlanner(task) if task.type == "TRANSFER" else DeletePlanner(task)
        try:
            plan = planner.plan()
        except TaskError as err:
            with state.lock:
                finish_fatal(task, err.code, err.description, err.details)
            return False
        paths = set()
        for op in plan:
            paths.update(p for p in op.get("cpaths", ()) if p)
        rules = state.faults.take_task({c.id for c in (task.source, task.destination) if c}, paths)
        with state.lock:
            task.files = planner.files
            task.directories = planner.directories
            task.total_estimated_bytes = planner.total_bytes
            task.sub_total = len(task.items) + planner.files + planner.directories
            task.sub_succeeded += len(task.items) - len(planner.skipped)
            for record in planner.skipped:
                self.record_skip(record)
            task.rules = [self.place_rule(rule, plan) for rule in rules]
            task.plan = plan
        return True

    @staticmethod
    def place_rule(rule, plan):
        """Decide before which operation a task fault takes effect."""
        trigger = None
        prefix = rule.get("path_prefix")
        if prefix:
            for index, op in enumerate(plan):
                if any(p and p.startswith(prefix) for p in op.get("cpaths", ())):
                    trigger = index
                    break
        else:
            wanted = int(rule.get("after_files", 0))
            seen = 0
            for index, op in enumerate(plan):
                if op["op"] in ("file", "delete"):
                    if seen == wanted:
                        trigger = index
                        break
                    seen += 1
            if trigger is None and wanted == 0:
                trigger = 0
        rule["trigger"] = trigger
        rule["applied"] = False
        return rule

    def execute(self):
        task, state = self.task, self.state
        for rule in task.rules:
            if rule["kind"] == "slow" and rule["applied"]:
                self.rate = rule["bytes_per_second"]
        while True:
            with state.lock:
                if task.cursor >= len(task.plan):
                    break
                index = task.cursor
                op = task.plan[index]
            self.check()
            skip = self.apply_rules(index, op)
            if not skip:
                try:
                    self.perform(op)
                except TaskError as err:
                    self.handle_error(err, op)
            with state.lock:
                task.cursor = index + 1
        with state.lock:
            self.flush_progress()
            details = {"files_succeeded": task.files_transferred, "files_skipped": task.files_skipped,
                       "subtasks_skipped_errors": task.sub_skipped}
            task.add_event("SUCCEEDED", "succeeded", details, False)
            task.finish("SUCCEEDED")

    # ------------------------------------------------------------ faults

    def apply_rules(self, index, op):
        """Apply task faults due before ``op``; return True when the op was skipped."""
        task, state = self.task, self.state
        for rule in task.rules:
            if rule["applied"] or rule["trigger"] != index:
                continue
            kind = rule["kind"]
            with state.lock:
                rule["applied"] = True
            if kind == "slow":
                self.rate = rule["bytes_per_second"]
            elif kind == "corrupt":
                self.corruptions = int(rule.get("repeat", 1))
            elif kind == "pause":
                with state.lock:
                    self.flush_progress()
                    message = rule.get("message") or "The task was paused by an administrator"
                    park_paused(task, message, rule.get("nice_status", "PAUSED"), rule.get("collection_id"))
                raise Stop()
            elif kind == "inactive":
                code = rule.get("code", "NO_CREDENTIALS")
                description = rule.get("description") or describe(code)
                details = rule.get("details") or "Credentials for the collection are missing or expired"
                with state.lock:
                    self.flush_progress()
                    task.status = "INACTIVE"
                    task.phase = "inactive"
                    task.inactive_code = (code, description, details)
                    task.add_event(code, description, details, True)
                raise Stop()
            elif kind == "fail":
                code = rule.get("code", "PERMISSION_DENIED")
                description = rule.get("description") or describe(code)
                details = rule.get("details") or self.error_details(op, "Injected fatal error")
                with state.lock:
                    self.flush_progress()
                    finish_fatal(task, code, description, details)
                raise Stop()
            elif kind == "event":
                if self.injected_events(rule, op):
                    return True
        return False

    def injected_events(self, rule, op):
        task, state = self.task, self.state
        code = rule.get("code", "ENDPOINT_TOO_BUSY")
        description = rule.get("description") or describe(code)
        details = rule.get("details") or self.error_details(op, rule.get("message") or description)
        for attempt in range(int(rule.get("repeat", 1))):
            with state.lock:
                task.faults += 1
                task.problem = (code, description, details)
                task.add_event(code, description, details, True)
            self.sleep(float(rule.get("retry_delay", 0.2)))
        with state.lock:
            task.problem = None
            if rule.get("fatal"):
                self.flush_progress()
                task.add_event(code, description, details, True)
                task.finish("FAILED", {"code": code, "description": description})
                raise Stop()
            if code in SKIPPABLE_CODES and task.options.get("skip_source_errors") and op["op"] == "file":
                self.record_skip({"source_path": op["cpaths"][0], "destination_path": op["cpaths"][1],
                                  "error_code": code, "error_details": details, "is_directory": False},
                                 emit_error=False)
                return True
        return False

    def error_details(self, op, message):
        coll = self.task.source
        path = (op.get("cpaths") or (None,))[0]
        return (f"Error (transfer)\nEndpoint: {coll.display_name} ({coll.id})\n"
                f"Server: {coll.server_host}:{coll.server_port}\nFile: {path}\nMessage: {message}\n")

    def record_skip(self, record, emit_error=True):
        """Book a path skipped under skip_source_errors: error event, SKIPPED_ERRORS event, record.

        Called with the lock held.
        """
        task = self.task
        if emit_error:
            task.add_event(record["error_code"], describe(record["error_code"]), record["error_details"], True)
        task.skipped.append({
            "DATA_TYPE": "skipped_error",
            "checksum_algorithm": None,
            "destination_path": record.get("destination_path"),
            "error_code": record["error_code"],
            "error_details": record["error_details"],
            "error_time": iso(now()),
            "external_checksum": None,
            "is_delete_destination_extra": False,
            "is_directory": bool(record.get("is_directory")),
            "is_symlink": False,
            "source_path": record.get("source_path"),
        })
        task.sub_skipped += 1
        task.add_event("SKIPPED_ERRORS", "skipped errors",
                       {"skipped_paths": 1, "error_code": record["error_code"],
                        "source_path": record.get("source_path")}, False)

    def handle_error(self, err, op):
        task, state = self.task, self.state
        with state.lock:
            if err.source_side and err.code in SKIPPABLE_CODES and task.options.get("skip_source_errors"):
                self.record_skip({"source_path": err.paths[0], "destination_path": err.paths[1],
                                  "error_code": err.code, "error_details": err.details,
                                  "is_directory": err.is_directory})
                return
            self.flush_progress()
            finish_fatal(task, err.code, err.description, err.details)
        raise Stop()

    # ------------------------------------------------------------ operations

    def perform(self, op):
        kind = op["op"]
        if kind == "mkdir":
            self.mkdir(op)
        elif kind == "file":
            self.copy(op)
        elif kind == "prune":
            self.prune(op)
        elif kind == "delete":
            self.delete(op)
        with self.state.lock:
            if kind in ("mkdir", "delete"):
                self.task.sub_succeeded += 1

    def mkdir(self, op):
        try:
            os.makedirs(op["dst"], exist_ok=True)
        except OSError as exc:
            raise os_error(exc, op, source_side=False) from None

    def copy(self, op):
        task, state = self.task, self.state
        src, dst = op["src"], op["dst"]
        try:
            st = os.stat(src)
        except FileNotFoundError:
            raise TaskError("FILE_NOT_FOUND", "file not found", self.error_details(op, "No such file or directory"),
                            source_side=True, paths=op["cpaths"]) from None
        level = task.options.get("sync_level")
        if level is not None and os.path.exists(dst) and self.in_sync(level, src, dst, st):
            with state.lock:
                task.files_skipped += 1
                task.sub_succeeded += 1
            return
        algorithm = op.get("checksum_algorithm", "MD5").upper()
        expected = op.get("external_checksum")
        verify = bool(task.options.get("verify_checksum") or expected)
        source_sum = file_checksum(src, algorithm) if verify else None
        if expected and source_sum != expected.lower():
            # docs (transfer_item): an external_checksum that does not match fails the whole task
            raise TaskError("VERIFY_CHECKSUM", "verify checksum", self.error_details(
                op, f"Checksum mismatch: the source file has {algorithm} {source_sum}, expected {expected}"))
        for failed_checks in itertools.count(1):
            self.write_copy(op, st)
            if not verify:
                break
            destination_sum = file_checksum(dst, algorithm)
            with state.lock:
                task.bytes_checksummed += st.st_size
            if destination_sum == source_sum:
                break
            message = f"Checksum mismatch: the destination file has {algorithm} {destination_sum}, the source {source_sum}"
            if failed_checks >= VERIFY_ATTEMPTS:
                raise TaskError("VERIFY_CHECKSUM", "verify checksum", self.error_details(op, message))
            with state.lock:  # the service retries the file; the error event shows the mismatch
                task.faults += 1
                task.add_event("VERIFY_CHECKSUM", "verify checksum", self.error_details(op, message), True)
        with state.lock:
            task.files_transferred += 1
            task.sub_succeeded += 1
            task.successful.append({"DATA_TYPE": "successful_transfer", "source_path": op["cpaths"][0],
                                    "destination_path": op["cpaths"][1], "size": st.st_size,
                                    "checksum": source_sum, "checksum_algorithm": algorithm if verify else None,
                                    "dynamic": False})

    def write_copy(self, op, st):
        """Copy the bytes (damaged while a ``corrupt`` fault lasts) and the timestamp if asked."""
        src, dst = op["src"], op["dst"]
        try:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            self.stream(src, dst)
            if self.corruptions and st.st_size:
                self.corruptions -= 1
                with open(dst, "r+b") as handle:
                    first = handle.read(1)
                    handle.seek(0)
                    handle.write(bytes([first[0] ^ 0xFF]))
            if self.task.options.get("preserve_timestamp"):
                os.utime(dst, (int(st.st_atime), int(st.st_mtime)))
        except OSError as exc:
            raise os_error(exc, op, source_side=isinstance(exc, FileNotFoundError)) from None

    def in_sync(self, level, src, dst, st):
        """sync_level semantics (docs, task submission): True means skip the file."""
        dst_st = os.stat(dst)
        if level == 0:
            return True
        if level == 1:
            return dst_st.st_size == st.st_size
        if level == 2:
            return int(st.st_mtime) <= int(dst_st.st_mtime)
        with self.state.lock:
            self.task.bytes_checksummed += st.st_size
        return dst_st.st_size == st.st_size and file_checksum(src) == file_checksum(dst)

    def limit(self):
        rates = [r for r in (self.state.transfer_rate, self.rate) if r]
        return min(rates) if rates else None

    def stream(self, src, dst):
        task, state = self.task, self.state
        rate = self.limit()
        chunk = CHUNK if not rate else int(min(CHUNK, max(4096, rate / 10)))
        started = time.monotonic()
        sent = 0
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while True:
                self.check()
                block = fin.read(chunk)
                if not block:
                    break
                fout.write(block)
                sent += len(block)
                with state.lock:
                    task.bytes_transferred += len(block)
                    self.progress_bytes += len(block)
                    self.maybe_progress()
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        self.sleep(ahead)

    def prune(self, op):
        """delete_destination_extra: remove destination entries absent from the source."""
        rules = self.task.options.get("filter_rules")
        root = op["dst"]
        keep = op["keep"]
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir
            for name in list(dirnames):
                rel = os.path.join(rel_dir, name)
                if rel not in keep and match_filter_rules(rules, name, True):
                    shutil.rmtree(os.path.join(dirpath, name), ignore_errors=True)
                    dirnames.remove(name)
            for name in filenames:
                rel = os.path.join(rel_dir, name)
                if rel not in keep and match_filter_rules(rules, name, False):
                    os.remove(os.path.join(dirpath, name))

    def delete(self, op):
        try:
            if op["is_dir"]:
                os.rmdir(op["src"])
            else:
                os.remove(op["src"])
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise os_error(exc, op, source_side=False) from None

    # ------------------------------------------------------------ PROGRESS events

    def maybe_progress(self):
        if now() - self.progress_start >= self.state.progress_interval:
            self.flush_progress()

    def flush_progress(self):
        """Emit a PROGRESS event for the bytes moved since the last one (lock held).

        Its details are the JSON text ``{"bytes_transferred", "duration", "mbps"}`` that
        performance-monitoring consumers (the ESGF replication tool) parse.
        """
        if self.progress_bytes <= 0:
            self.progress_start = now()
            return
        duration = round(max(now() - self.progress_start, 0.01), 2)
        details = {"bytes_transferred": self.progress_bytes, "duration": duration,
                   "mbps": round(self.progress_bytes * 8 / duration / 1e6, 2)}
        self.task.add_event("PROGRESS", "progress", details, False)
        self.progress_bytes = 0
        self.progress_start = now()


def os_error(exc, op, source_side):
    code = {errno.EACCES: "PERMISSION_DENIED", errno.EPERM: "PERMISSION_DENIED", errno.ENOENT: "FILE_NOT_FOUND",
            errno.ENOSPC: "NO_SPACE_LEFT", errno.EDQUOT: "QUOTA_EXCEEDED", errno.ENOTDIR: "NOT_A_DIRECTORY",
            errno.EISDIR: "IS_A_DIRECTORY"}.get(exc.errno, "ENDPOINT_ERROR")
    return TaskError(code, describe(code), f"{exc.strerror}: {exc.filename}", source_side=source_side,
                     paths=op.get("cpaths", (None, None)))
