# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""On a managed host with Python older than 3.9, every module fails with one clear message before doing
anything, whatever its options, and without echoing a secret. The oldest supported ansible-core still runs
modules on Python 2.7 and 3.6 to 3.8 (newer ones refuse them themselves), so the runs use it: ci.sh exports
SCIDATA_FLOOR_BIN, the bin directory of .venv-floor. Python 2.7 and 3.6 cannot even compile the collection's
module_utils, and still get the same message."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
import yaml

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION_ROOT = os.path.dirname(TESTS_DIR)
COLLECTIONS_PATH = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_ROOT)))
MODULES = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(COLLECTION_ROOT, "plugins", "modules", "*.py")))
# pyenv's layout, as tests/harness/setup.sh finds its Python 3.12
PYENV_VERSIONS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
PYTHONS = sorted(p for pattern in ("2.7.*", "3.[678].*") for p in glob.glob(os.path.join(PYENV_VERSIONS, pattern, "bin", "python")))


def version_of(python):
    """The version of a pyenv Python, from its directory name: /root/.pyenv/versions/3.6.15/bin/python -> 3.6.15"""
    return os.path.basename(os.path.dirname(os.path.dirname(python)))


def test_old_pythons_are_available():
    assert {version_of(p)[:3] for p in PYTHONS} == {"2.7", "3.6", "3.7", "3.8"}, PYTHONS


@pytest.mark.parametrize("python", PYTHONS)
def test_every_module_refuses_python_before_3_9_clearly(python, tmp_path):
    floor = os.environ.get("SCIDATA_FLOOR_BIN")
    assert floor, "set SCIDATA_FLOOR_BIN to the bin directory of .venv-floor (tests/harness/ci.sh does)"
    with open(os.path.join(COLLECTION_ROOT, "meta", "runtime.yml")) as handle:
        groups = yaml.safe_load(handle)["action_groups"]
    state_db, results = tmp_path / "state.db", tmp_path / "results.json"
    tasks = []
    for module in MODULES:
        # No required option (the refusal comes before validation), a secret where the module takes one.
        args = {}
        if module in groups["state"]:
            args.update(state_db=str(state_db), state_db_password="s3cret")
        if module in groups["globus"]:
            args.update(client_secret="s3cret")
        tasks.append({"scidata.replication." + module: args, "register": "run_" + module, "ignore_errors": True})
    collect = ", ".join("'%s': run_%s" % (m, m) for m in MODULES)
    tasks.append({"ansible.builtin.copy": {"content": "{{ {%s} | to_json }}" % collect, "dest": str(results), "mode": "0600"},
                  "vars": {"ansible_python_interpreter": sys.executable}})
    play = [{"hosts": "localhost", "gather_facts": False, "vars": {"ansible_python_interpreter": python}, "tasks": tasks}]
    (tmp_path / "play.json").write_text(json.dumps(play))
    run = subprocess.run([os.path.join(floor, "ansible-playbook"), "-i", "localhost,", "-c", "local", str(tmp_path / "play.json")],
                         env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1"),
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "s3cret" not in run.stdout + run.stderr
    expected = ("scidata.replication needs Python 3.9 or later on the managed host; %s is Python %s. "
                "Set ansible_python_interpreter to a newer Python." % (python, version_of(python)))
    assert "s3cret" not in results.read_text()  # the registered results, invocation included
    outcome = json.loads(results.read_text())
    assert {m: r.get("msg") for m, r in outcome.items()} == dict.fromkeys(MODULES, expected)
    assert all(r["failed"] and not r["changed"] for r in outcome.values())
    assert not state_db.exists()
