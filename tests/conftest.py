# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pytest fixtures: the real services of tests/harness and an ansible-playbook runner.

Tests run from the collection laid out as ``ansible_collections/scidata/replication`` (``make
test`` builds that layout), so the collection imports and ``ansible-playbook`` finds it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
COLLECTION_ROOT = os.path.dirname(TESTS_DIR)
COLLECTIONS_PATH = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_ROOT)))
sys.path[:0] = [COLLECTIONS_PATH, os.path.join(TESTS_DIR, "harness"), os.path.join(TESTS_DIR, "emulator")]

import services  # noqa: E402  (needs the path above)


@pytest.fixture(scope="session")
def harness_dir():
    # Not under pytest's 0700 tmp root: the PostgreSQL server runs as the postgres account.
    path = tempfile.mkdtemp(prefix="scidata-harness-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(harness_dir):
    server = services.PostgresServer(harness_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sshd(harness_dir):
    server = services.SshServer(harness_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp_sink(harness_dir):
    server = services.SmtpSink(harness_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """The Globus Transfer/Auth API emulator; ``emulator.root`` holds one directory per collection."""
    import globus_setup
    from globus_emulator.harness import EmulatorProcess

    root = tmp_path_factory.mktemp("collections")
    process = EmulatorProcess(globus_setup.emulator_config(str(root)), str(tmp_path_factory.mktemp("emulator")))
    process.start()
    process.root = root
    yield process
    process.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_db_url(request, tmp_path):
    """A fresh, empty state database on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    postgres = request.getfixturevalue("postgres")
    return postgres.create_database("t_" + uuid.uuid4().hex[:12])


@pytest.fixture
def python_env():
    """Environment for child Python processes: the collection importable, harness on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([COLLECTIONS_PATH, os.path.join(TESTS_DIR, "harness")]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


class PlaybookRunner(object):
    """Runs one module task through the real ``ansible-playbook`` and returns its registered result."""

    def __init__(self, workdir, env):
        self.workdir = workdir
        self.env = dict(env, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1",
                        ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")

    def playbook(self, module, args, check=False, interpreter=None, verbosity=0, name="run", extra_env=None):
        """Start ansible-playbook; returns (process, result_file) without waiting."""
        result_file = os.path.join(self.workdir, "%s-%s.json" % (name, uuid.uuid4().hex[:8]))
        play = [{
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": interpreter or sys.executable},
            "tasks": [
                {"name": "Run the module", module: args, "register": "module_result", "ignore_errors": True,
                 "check_mode": check},
                {"name": "Save the result", "ansible.builtin.copy": {
                    "content": "{{ module_result | to_json }}", "dest": result_file, "mode": "0600"},
                 "check_mode": False},
            ],
        }]
        path = os.path.join(self.workdir, "%s-%s.yml" % (name, uuid.uuid4().hex[:8]))
        with open(path, "w") as handle:
            json.dump(play, handle)
        argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                "-c", "local", path]
        if verbosity:
            argv.append("-" + "v" * verbosity)
        env = dict(self.env, **(extra_env or {}))
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return process, result_file

    def start(self, module, args, **kwargs):
        """Start a run a test can kill inside the module; returns a :class:`KillableRun`."""
        process, _result_file = self.playbook(module, args, **kwargs)
        return KillableRun(process, module)

    def run_killed_after(self, module, args, seconds, **kwargs):
        """Run, and kill the module process ``seconds`` after it started (see KillableRun.kill).

        Returns whether a live module was killed: False when the run ended first."""
        run = self.start(module, args, **kwargs)
        try:
            if run.wait_for_module() is None:
                return False
            time.sleep(seconds)
            return run.kill()
        finally:
            run.stop()

    def run(self, module, args, **kwargs):
        """Run to completion; returns (result dict, ansible-playbook output)."""
        process, result_file = self.playbook(module, args, **kwargs)
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, output
        with open(result_file) as handle:
            return json.load(handle), output


def _proc_stat(pid):
    """(state, parent pid, start time) of a process, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _proc_argv(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return [arg.decode("utf-8", "replace") for arg in handle.read().split(b"\0") if arg]
    except OSError:
        return []


def _descendants(root):
    """{pid: start time} of every process below ``root`` (children by parent pid, from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat:
                children.setdefault(stat[1], []).append((int(entry), stat[2]))
    found, todo = {}, [root]
    while todo:
        for pid, started in children.get(todo.pop(), ()):
            found[pid] = started
            todo.append(pid)
    return found


def _alive(pid, started):
    stat = _proc_stat(pid)
    return stat is not None and stat[2] == started and stat[0] not in ("Z", "X")


class KillableRun(object):
    """An ansible-playbook run whose module process a test kills at a moment it chooses.

    ansible-core runs each task in a worker that starts its own session, so signalling the
    playbook's process group never reaches the module. This walks the process tree below
    ansible-playbook instead, freezes all of it (SIGSTOP, until no new process appears), kills
    it, and checks that every process really died."""

    def __init__(self, process, module):
        self.process = process
        self.module_file = "AnsiballZ_%s.py" % module.rsplit(".", 1)[-1]

    @staticmethod
    def alive(process):
        """Whether a (pid, start time) process still runs (a zombie does not)."""
        return _alive(*process)

    def module_pid(self):
        """(pid, start time) of the running module process, or None."""
        for pid, started in _descendants(self.process.pid).items():
            argv = _proc_argv(pid)
            # The interpreter running the module, not the /bin/sh -c lines that start it.
            if len(argv) == 2 and os.path.basename(argv[1]) == self.module_file and _alive(pid, started):
                return pid, started
        return None

    def wait_for_module(self, timeout=120):
        """Block until the module process runs; None if the playbook ended first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.module_pid()
            if found or self.process.poll() is not None:
                return found
            time.sleep(0.02)
        raise AssertionError("the module did not start within %d s" % timeout)

    def kill(self):
        """Freeze and SIGKILL the whole run; returns whether a live module process was killed.

        Fails the test if any process of the run survives."""
        os.kill(self.process.pid, signal.SIGSTOP)
        frozen = {}
        while True:
            new = dict((pid, started) for pid, started in _descendants(self.process.pid).items() if pid not in frozen)
            if not new:
                break
            for pid in new:
                _signal(pid, signal.SIGSTOP)
            frozen.update(new)
        module = self.module_pid()
        for pid in ([module[0]] if module else []) + sorted(frozen):
            _signal(pid, signal.SIGKILL)
        self.process.kill()
        self.process.communicate()
        end = time.monotonic() + 30
        survivors = frozen
        while survivors and time.monotonic() < end:
            survivors = dict((pid, started) for pid, started in survivors.items() if _alive(pid, started))
            time.sleep(0.01)
        assert not survivors, "processes of the killed run still alive: %s" % survivors
        return module is not None

    def stop(self):
        """Make sure nothing of the run is left, whether it was killed or ended on its own."""
        if self.process.returncode is None:
            if self.process.poll() is None:
                self.kill()
            else:
                self.process.communicate()


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


@pytest.fixture
def ansible(tmp_path, python_env):
    return PlaybookRunner(str(tmp_path), python_env)
