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

    def playbook(self, module, args, check=False, interpreter=None, verbosity=0, name="run", extra_env=None,
                 new_session=False):
        """Start ansible-playbook; returns (process, result_file) without waiting.

        ``new_session`` puts it in its own process group, so a test can SIGKILL the whole run."""
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
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=new_session)
        return process, result_file

    def run_killed_after(self, module, args, seconds, **kwargs):
        """Run, and SIGKILL the whole run (its process group) if it is still going after
        ``seconds``; returns whether it was killed."""
        process, _result_file = self.playbook(module, args, new_session=True, **kwargs)
        try:
            process.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return True
        return False

    def run(self, module, args, **kwargs):
        """Run to completion; returns (result dict, ansible-playbook output)."""
        process, result_file = self.playbook(module, args, **kwargs)
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, output
        with open(result_file) as handle:
            return json.load(handle), output


@pytest.fixture
def ansible(tmp_path, python_env):
    return PlaybookRunner(str(tmp_path), python_env)
