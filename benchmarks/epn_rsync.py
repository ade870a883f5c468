# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""epn_rsync over ssh to a private loopback sshd: its overhead, and what parallel workers buy.

Run from the collection layout (``make bench`` style)::

    cd "$(SCIDATA_BUILD_DIR=/tmp/epn-build bash tests/harness/layout.sh)" && python benchmarks/epn_rsync.py

1. Overhead: 50 EPNs; the wall time of epn_rsync (workers=1, SQLite state, every attempt
   recorded) divided by the wall time of the very same rsync argument lists run bare, one
   after the other. Goal: <= 1.05x. The module runs as ansible-playbook would start it on
   the target (``python -m ...epn_rsync args.json``); one run through ansible-playbook is
   shown too, whose fixed start-up cost is the controller's, not the module's.
2. Parallelism: EPNs of many small files (where ssh's and rsync's CPU is the limit),
   workers=1 divided by workers=4. Goal: >= 1.8x on a 2-core machine.

Each figure is the median of ``--rounds`` runs into a fresh destination and database.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

from common import COLLECTION_ROOT, print_table, services, timed, workdir

from ansible_collections.scidata.replication.plugins.module_utils._rsync import (
    RSYNC_ENVIRONMENT,
    build_rsync_argv,
    build_ssh_command,
    remote_source,
)

COLLECTIONS_PATH = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_ROOT)))
MODULE = "ansible_collections.scidata.replication.plugins.modules.epn_rsync"


def make_epns(root, count, files, size, prefix):
    epns = []
    for number in range(count):
        epn = "%d%04da" % (prefix, number)
        folder = os.path.join(root, epn)
        os.makedirs(os.path.join(folder, "raw"))
        for index in range(files):
            with open(os.path.join(folder, "raw", "img_%05d.cbf" % index), "wb") as handle:
                handle.write(os.urandom(size))
        epns.append(epn)
    return epns


def module_args(sshd, src_prefix, dest_root, epns, state_db, workers):
    info = sshd.info
    return {
        "epns": epns, "host": info["host"], "port": info["port"], "user": info["user"], "key_file": info["key_file"],
        "known_hosts_file": info["known_hosts"], "src_prefix": src_prefix, "beamline": "MX",
        "epn_cap_map": {epn[:-1]: "proj" for epn in epns}, "dest_root": dest_root, "state_db": state_db,
        "lock_file": state_db + ".lock", "workers": workers,
    }


def bare_argvs(sshd, src_prefix, dest_root, epns):
    """The argument lists epn_rsync runs, built by the same functions with the same defaults."""
    info = sshd.info
    ssh = build_ssh_command(port=info["port"], key_file=info["key_file"], known_hosts_file=info["known_hosts"])
    rsync = shutil.which("rsync")
    return [build_rsync_argv(remote_source(info["user"], info["host"], "%s/MX/%s/" % (src_prefix, epn)),
                             "%s/proj/%s/data/" % (dest_root, epn), rsync_path=rsync, ssh_command=ssh)
            for epn in epns]


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def run_bare(argvs, dest_root):
    fresh(dest_root)
    for argv in argvs:
        os.makedirs(os.path.dirname(argv[-1].rstrip("/")), exist_ok=True)  # as the module does
    env = dict(os.environ, **RSYNC_ENVIRONMENT)

    def go():
        for argv in argvs:
            subprocess.run(argv, check=True, capture_output=True, env=env)

    seconds, _result = timed(go)
    return seconds


def run_module(args, path, name):
    fresh(args["dest_root"])
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(args["state_db"] + suffix):
            os.unlink(args["state_db"] + suffix)
    args_file = os.path.join(path, name + ".json")
    with open(args_file, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    env = dict(os.environ, PYTHONPATH=COLLECTIONS_PATH)
    seconds, done = timed(lambda: subprocess.run([sys.executable, "-m", MODULE, args_file], check=False,
                                                 capture_output=True, text=True, env=env))
    result = json.loads(done.stdout)
    assert not result.get("failed") and len(result["synced"]) == len(args["epns"]), result
    return seconds


def run_playbook(args, path):
    fresh(args["dest_root"])
    if os.path.exists(args["state_db"]):
        os.unlink(args["state_db"])
    playbook = os.path.join(path, "bench.yml")
    with open(playbook, "w") as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False,
                    "vars": {"ansible_python_interpreter": sys.executable},
                    "tasks": [{"name": "epn_rsync", "scidata.replication.epn_rsync": args}]}], handle)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            playbook]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_LOCALHOST_WARNING="0")
    seconds, _done = timed(lambda: subprocess.run(argv, check=True, capture_output=True, env=env))
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epns", type=int, default=50)
    parser.add_argument("--files", type=int, default=4, help="files per EPN in the overhead test")
    parser.add_argument("--size", type=int, default=2 * 1024 * 1024, help="bytes per file in the overhead test")
    parser.add_argument("--small-epns", type=int, default=16)
    parser.add_argument("--small-files", type=int, default=300)
    parser.add_argument("--small-size", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    with workdir() as path:
        sshd = services.SshServer(path).start()
        try:
            src = os.path.join(path, "src")
            big = make_epns(os.path.join(src, "MX"), options.epns, options.files, options.size, 1)
            small = make_epns(os.path.join(src, "MX"), options.small_epns, options.small_files, options.small_size, 2)
            dest = os.path.join(path, "dest")
            state_db = os.path.join(path, "state.db")
            argvs = bare_argvs(sshd, src, dest, big)
            run_bare(argvs, dest)  # warm the page cache and ssh
            bare, module = [], []
            for _round in range(options.rounds):
                bare.append(run_bare(argvs, dest))
                module.append(run_module(module_args(sshd, src, dest, big, state_db, 1), path, "overhead"))
            playbook = run_playbook(module_args(sshd, src, dest, big, state_db, 1), path)
            one, four = [], []
            for _round in range(options.rounds):
                one.append(run_module(module_args(sshd, src, dest, small, state_db, 1), path, "one"))
                four.append(run_module(module_args(sshd, src, dest, small, state_db, 4), path, "four"))
        finally:
            sshd.stop()

    bare_s, module_s, one_s, four_s = (statistics.median(v) for v in (bare, module, one, four))
    total = options.epns * options.files * options.size
    print_table("epn_rsync overhead: %d EPNs, %d MiB over ssh to loopback; wall seconds (ratio to bare rsync)" % (
        options.epns, total // 2 ** 20), [
        ("bare rsync, the same argv lists in sequence", bare_s, "s", None),
        ("epn_rsync workers=1 (module run as on the target)", module_s, "s", module_s / bare_s),
        ("epn_rsync workers=1 through ansible-playbook (1 run)", playbook, "s", playbook / bare_s),
    ])
    print_table("epn_rsync parallelism: %d EPNs x %d files of %d bytes; wall seconds (speed-up over workers=1)" % (
        options.small_epns, options.small_files, options.small_size), [
        ("workers=1", one_s, "s", None),
        ("workers=4", four_s, "s", one_s / four_s),
    ])
    print("rounds: bare %s | module %s | workers=1 %s | workers=4 %s" % tuple(
        " ".join("%.2f" % s for s in values) for values in (bare, module, one, four)))


if __name__ == "__main__":
    main()
