# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The scheduler: per-user slots, queueing, deadlines of parked tasks, admin pause and resume.

It gives each user at most ``max_active_tasks`` working transfer tasks and as many delete tasks
(docs: task behavior, queuing); other tasks wait with nice_status ``Queued``.  Each working task
gets a thread running :class:`globus_emulator.runner.Runner`.  Paused and INACTIVE tasks hold no
slot; resuming queues them again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from .model import TASK_DEFAULT_DEADLINE
from .runner import Runner, finish_canceled, finish_expired, park_paused
from .util import now

log = logging.getLogger("globus_emulator.worker")


class Worker:
    """Owns the scheduler thread and the runner threads."""

    def __init__(self, state):
        self.state = state
        self.stopping = threading.Event()
        self.runners = {}
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self._loop, name="emulator-scheduler", daemon=True)
        self.thread.start()

    def stop(self, timeout=5.0):
        self.stopping.set()
        self.state.notify()
        if self.thread:
            self.thread.join(timeout)
        end = time.monotonic() + timeout
        for thread in list(self.runners.values()):
            thread.join(max(end - time.monotonic(), 0.01))

    # ------------------------------------------------------------ scheduling

    def _loop(self):
        state = self.state
        while not self.stopping.is_set():
            with state.changed:
                try:
                    self._tick()
                except Exception:  # keep scheduling whatever one task did
                    log.exception("scheduler tick failed")
                state.changed.wait(0.05)

    def _tick(self):
        state = self.state
        working = collections.Counter()
        for task in state.tasks.values():
            if task.phase == "running":
                working[(task.owner.id, task.type)] += 1
        for task in list(state.tasks.values()):
            if task.done or task.phase == "running" or task.discard:
                continue
            if task.cancel_requested:
                finish_canceled(task)
                state.changed.notify_all()
                continue
            if now() > task.deadline:
                finish_expired(task)
                state.changed.notify_all()
                continue
            if task.phase != "queued":
                continue
            key = (task.owner.id, task.type)
            if working[key] >= state.limits.max_active_tasks:
                continue
            working[key] += 1
            task.phase = "running"
            thread = threading.Thread(target=self._run, args=(task,), name=f"task-{task.task_id[:8]}", daemon=True)
            self.runners[task.task_id] = thread
            thread.start()

    def _run(self, task):
        try:
            Runner(self.state, task, self.stopping).run()
        except Exception as exc:  # a bug in the emulator must not leave the task running forever
            log.exception("task %s crashed", task.task_id)
            with self.state.lock:
                if not task.done:
                    task.add_event("INTERNAL_ERROR", "internal error", f"emulator error: {exc!r}", True)
                    task.finish("FAILED", {"code": "INTERNAL_ERROR", "description": "internal error"})
        finally:
            with self.state.changed:
                self.runners.pop(task.task_id, None)
                if task.phase == "running" and not task.done:
                    task.phase = "queued"
                self.state.changed.notify_all()

    # ------------------------------------------------------------ admin controls

    def pause(self, task, message=None):
        with self.state.changed:
            if task.done or task.is_paused:
                return
            if task.phase == "running":
                task.pause_request = message or "The task was paused by an administrator"
            else:
                park_paused(task, message or "The task was paused by an administrator", "PAUSED")
            self.state.changed.notify_all()

    def resume(self, task):
        with self.state.changed:
            if task.phase == "paused":
                task.is_paused = False
                task.problem = None
                task.pause_rule = None
                task.add_event("UNPAUSED", "unpaused", "The task was resumed", False)
                if not task.user_deadline:
                    task.deadline = now() + TASK_DEFAULT_DEADLINE
                task.phase = "queued"
            elif task.phase == "inactive":
                task.status = "ACTIVE"
                task.inactive_code = None
                task.phase = "queued"
            self.state.changed.notify_all()
