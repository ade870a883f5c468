# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make demo`: replicate a sample tree with the real modules against the bundled Globus emulator.

Starts the Globus Transfer/Auth API emulator on loopback with two local collections, generates a
sample tree, runs playbooks/demo.yml three times (first run, a run with nothing new, a run after
touching one file), checks that the replica equals the source, writes the dashboard, and stops
everything it started.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTION_ROOT = os.path.dirname(HERE)
COLLECTIONS_PATH = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_ROOT)))
sys.path[:0] = [os.path.join(COLLECTION_ROOT, "tests", "harness"), os.path.join(COLLECTION_ROOT, "tests", "emulator")]

import globus_setup  # noqa: E402
from globus_emulator.harness import EmulatorProcess  # noqa: E402

BANNER = """\
================================================================================
 scidata.replication demo
 The Globus service is EMULATED here: a local Transfer/Auth API emulator on
 loopback copies files between two directories mapped as collections.
================================================================================"""

REAL_GLOBUS = """\
To run the same playbook against real Globus collections:
  export GLOBUS_CLIENT_ID=<confidential app id> GLOBUS_CLIENT_SECRET=<its secret>
  unset GLOBUS_SDK_SERVICE_URL_TRANSFER GLOBUS_SDK_SERVICE_URL_AUTH
  ansible-playbook scidata.replication.demo -e demo_source_collection=<id> \\
      -e demo_source_path=<path of demo_src_dir on it> -e demo_destination_collection=<id> \\
      -e demo_src_dir=<local directory> -e demo_workdir=<writable directory>"""


def make_tree(root, seed=20261125):
    """A sample of what labs replicate: datasets with nested versions, a few MB in all."""
    rng = random.Random(seed)
    for dataset in range(4):
        for version in ("v20240101", "v20250601"):
            directory = os.path.join(root, "dataset-%d" % dataset, "gn", version)
            os.makedirs(directory)
            for number in range(rng.randint(3, 8)):
                with open(os.path.join(directory, "tas_%02d.nc" % number), "wb") as handle:
                    handle.write(rng.randbytes(rng.randint(10_000, 400_000)))
    os.makedirs(os.path.join(root, "dataset-0", "empty-for-now"))
    with open(os.path.join(root, "README with spaces.txt"), "w") as handle:
        handle.write("sample tree for the scidata.replication demo\n")


def same_tree(left, right):
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.diff_files or comparison.funny_files:
        return False
    _match, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(os.path.join(left, d), os.path.join(right, d))
                                               for d in comparison.common_dirs)


def run_playbook(extra_vars, env, label):
    print("\n--- %s: ansible-playbook scidata.replication.demo" % label, flush=True)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            os.path.join(COLLECTION_ROOT, "playbooks", "demo.yml"), "-e", "@" + extra_vars]
    completed = subprocess.run(argv, env=env, check=False, capture_output=True, text=True)
    if completed.returncode != 0:
        print(completed.stdout[-5000:], completed.stderr[-3000:])
        raise SystemExit("the demo playbook failed (%s)" % label)
    with open(json.load(open(extra_vars))["demo_summary_file"]) as handle:
        return json.load(handle)


def totals(state_db):
    db = sqlite3.connect(state_db)
    try:
        tasks, files, size = db.execute("SELECT count(*), COALESCE(SUM(files_transferred), 0), "
                                        "COALESCE(SUM(bytes_transferred), 0) FROM globus_tasks").fetchone()
    finally:
        db.close()
    return tasks, files, size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/scidata-replication-demo")
    args = parser.parse_args()
    print(BANNER)
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    config = globus_setup.emulator_config(os.path.join(args.workdir, "collections"))
    source_root = os.path.join(args.workdir, "collections", "src")
    tree = os.path.join(source_root, "demo-tree")
    make_tree(tree)
    emulator = EmulatorProcess(config, os.path.join(args.workdir, "emulator")).start()
    try:
        print("Globus API emulator listening on %s" % emulator.base_url)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_LOCALHOST_WARNING="0",
                   ANSIBLE_INVENTORY_UNPARSED_WARNING="0", **globus_setup.client_env(emulator))
        state_db = os.path.join(args.workdir, "state.db")
        variables = dict(
            ansible_python_interpreter=sys.executable,
            demo_workdir=args.workdir, demo_state_db=state_db, demo_src_dir=tree,
            demo_source_collection=globus_setup.SRC, demo_source_path="/demo-tree/",
            demo_destination_collection=globus_setup.DST, demo_summary_file=os.path.join(args.workdir, "summary.json"),
            demo_dashboard=os.path.join(args.workdir, "dashboard"),
            demo_datasets=sorted(d + "/" for d in os.listdir(tree) if os.path.isdir(os.path.join(tree, d))))
        extra_vars = os.path.join(args.workdir, "demo-vars.json")
        with open(extra_vars, "w") as handle:
            json.dump(variables, handle)

        first = run_playbook(extra_vars, env, "first run")
        tasks, files, size = totals(state_db)
        print("first run: %d tasks, %d files, %.1f MB transferred; tree files sent: %s"
              % (tasks, files, size / 1e6, first["tree_files_sent"]))
        second = run_playbook(extra_vars, env, "second run, nothing changed")
        print("second run: tree files sent: %s, dataset tasks submitted: %s"
              % (second["tree_files_sent"], second["dataset_tasks"]))
        touched = os.path.join(tree, "dataset-1", "gn", "v20250601", "tas_00.nc")
        with open(touched, "ab") as handle:
            handle.write(b"one more record")
        third = run_playbook(extra_vars, env, "third run, after touching one file")
        print("third run: tree files sent: %s (touched %s)" % (third["tree_files_sent"], os.path.relpath(touched, tree)))

        replica = os.path.join(args.workdir, "collections", "dst", "tree", "demo-tree")
        ok = (same_tree(tree, replica) and second["tree_files_sent"] == 0 and third["tree_files_sent"] == 1)
        print("\nreplica %s equals the source: %s" % (replica, "yes" if same_tree(tree, replica) else "NO"))
        print("dashboard: file://%s/index.html" % variables["demo_dashboard"])
        print("\n" + REAL_GLOBUS)
        if not ok:
            raise SystemExit("demo check failed")
        print("\ndemo check: 1 passed, 0 failed")
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
