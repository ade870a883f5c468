# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The module_defaults groups of meta/runtime.yml: each holds exactly the modules that accept every option
of its family, the modules document their membership, and the README's recipe runs as written."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys

import yaml

from ansible_collections.scidata.replication.plugins.module_utils._epn import SSH_ARGUMENT_SPEC
from ansible_collections.scidata.replication.plugins.module_utils._module import GLOBUS_ARGUMENT_SPEC, STATE_ARGUMENT_SPEC
from ansible_collections.scidata.replication.plugins.module_utils._state import LATEST_VERSION
from globus_setup import DST, client_env

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION_ROOT = os.path.dirname(TESTS_DIR)
COLLECTIONS_PATH = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_ROOT)))
BIN = os.path.dirname(sys.executable)
FAMILIES = {"state": STATE_ARGUMENT_SPEC, "globus": GLOBUS_ARGUMENT_SPEC, "epn": SSH_ARGUMENT_SPEC}


def module_docs():
    modules = sorted(os.path.splitext(name)[0] for name in os.listdir(os.path.join(COLLECTION_ROOT, "plugins", "modules"))
                     if name.endswith(".py"))
    result = subprocess.run([os.path.join(BIN, "ansible-doc"), "-t", "module", "--json"]
                            + ["scidata.replication." + m for m in modules],
                            env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH),
                            check=True, capture_output=True, text=True)
    return {name.rsplit(".", 1)[1]: doc["doc"] for name, doc in json.loads(result.stdout).items()}


def test_each_group_holds_exactly_the_modules_that_accept_its_options():
    with open(os.path.join(COLLECTION_ROOT, "meta", "runtime.yml")) as handle:
        groups = yaml.safe_load(handle)["action_groups"]
    docs = module_docs()
    assert set(groups) == set(FAMILIES)
    for group, spec in FAMILIES.items():
        accepting = sorted(m for m, doc in docs.items() if set(spec) <= set(doc["options"]))
        assert groups[group] == accepting, group
    for module, doc in docs.items():
        membership = doc.get("attributes", {}).get("action_group", {}).get("membership", [])
        assert sorted(membership) == sorted("scidata.replication." + g for g in groups if module in groups[g]), module


def test_readme_recipe_runs_as_written(emulator, tmp_path):
    with open(os.path.join(COLLECTION_ROOT, "README.md")) as handle:
        blocks = re.findall(r"```yaml\n(.*?)```", handle.read(), re.S)
    (recipe,) = [b for b in blocks if "module_defaults:" in b]
    assert "group/scidata.replication.state" in recipe and "group/scidata.replication.globus" in recipe
    (tmp_path / "recipe.yml").write_text(recipe)
    variables = {
        "ansible_python_interpreter": sys.executable,
        "replication_state_db": str(tmp_path / "state.db"),
        "replication_lock_file": str(tmp_path / "recipe.lock"),
        "replication_log_file": str(tmp_path / "runs.log"),
        "replication_destination": DST,
        "replication_dashboard": str(tmp_path / "dashboard"),
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1", **client_env(emulator))
    result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             "-e", "@%s" % (tmp_path / "vars.json"), str(tmp_path / "recipe.yml")],
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    with sqlite3.connect(str(tmp_path / "state.db")) as db:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == LATEST_VERSION
    runs = [json.loads(line) for line in (tmp_path / "runs.log").read_text().splitlines()]
    assert [r["module"] for r in runs] == ["state_schema", "replication_report"]
    assert (tmp_path / "dashboard" / "index.html").is_file()
