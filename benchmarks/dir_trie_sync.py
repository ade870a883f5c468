# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""dir_trie_sync's scan + diff beside ``find`` on the same tree, warm cache, in one run.

For each tree size (default 100k and 1M files) the script generates a tree (runs/scans/frames,
about 100 files per directory; empty files with sparse sizes, so 1M files need inodes, not data),
builds the job's index, marks it replicated, then times in fresh child processes:

- ``find SRC -printf '%p %T@ %s\\n' > /dev/null`` (the baseline) and ``os.walk`` + ``os.lstat``;
- a no-change rescan with the default scan workers (goal <= 1.3x find), and in one process;
- a rescan after 1% of the files were modified (goal <= 1.3x find);

and reports each child's peak RSS (goal <= 80 MiB, flat from 100k to 1M), the Python heap peak
under tracemalloc, and the index size on disk per path (goal <= 40 B).

Run from the collection layout (about 5 minutes on 2 cores; the 1M-file tree needs 1M inodes):
    cd "$(bash tests/harness/layout.sh)" && /path/to/repo/.venv/bin/python benchmarks/dir_trie_sync.py
(``--sizes 100000`` for a quick run, ``--keep DIR`` to reuse generated trees between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import tracemalloc

from common import print_table, timed

from ansible_collections.scidata.replication.plugins.module_utils import _pathindex

FILES_PER_DIR = 100
SCANS_PER_RUN = 20
REPEATS = 3
FIND = ["find", "{tree}", "-printf", "%p %T@ %s\\n"]


def tree_paths(count):
    """Relative paths of a synchrotron-like tree: run/scan/frame files, FILES_PER_DIR per directory."""
    for number in range(count):
        directory = number // FILES_PER_DIR
        yield "run%04d/scan%03d/frame_%06d.h5" % (directory // SCANS_PER_RUN, directory % SCANS_PER_RUN, number)


def generate(root, count):
    """Create the tree once (a marker file remembers it): empty files with sparse sizes and mtimes."""
    marker = root + ".generated"
    if os.path.exists(marker):
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(count)
    base = time.time() - 86400 * 30
    made = set()
    for rel in tree_paths(count):
        directory = os.path.join(root, os.path.dirname(rel))
        if directory not in made:
            os.makedirs(directory, exist_ok=True)
            made.add(directory)
        path = os.path.join(root, rel)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(descriptor, rng.randrange(1, 1 << 24))
        os.close(descriptor)
        stamp = base + rng.random() * 86400 * 20
        os.utime(path, (stamp, stamp))
    open(marker, "w").close()


def modify(root, count, fraction, seed):
    """Give ``fraction`` of the files a new mtime and size, as rewritten files would get."""
    rng = random.Random(seed)
    paths = [rel for rel in tree_paths(count) if rng.random() < fraction]
    now = time.time()
    for rel in paths:
        path = os.path.join(root, rel)
        os.truncate(path, rng.randrange(1, 1 << 24))
        os.utime(path, (now, now))
    return len(paths)


def child(args):
    """One measured scan in a fresh process: prints seconds, peak RSS and heap peak as JSON."""
    if args.tracemalloc:
        tracemalloc.start()
    worker_rss = 0
    if args.child == "find":
        argv = [a.replace("{tree}", args.tree) for a in FIND]
        with open(os.devnull, "w") as sink:
            seconds, _result = timed(lambda: subprocess.run(argv, stdout=sink, check=True))
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    elif args.child == "walk":
        def walk():
            files = 0
            for directory, _dirs, names in os.walk(args.tree):
                for name in names:
                    info = os.lstat(os.path.join(directory, name))
                    files += info.st_size > -1
            return files
        seconds, _files = timed(walk)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    else:
        workers = _pathindex.scan_workers(args.workers)
        index = _pathindex.PathIndex(args.index).open()
        seconds, report = timed(lambda: index.scan(args.tree, workers=workers))
        index.close()
        assert report.files > 0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if workers > 1:
            worker_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    heap = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
    print(json.dumps(dict(seconds=seconds, rss_kib=rss, heap_bytes=heap, worker_rss_kib=worker_rss)))


def measure(kind, tree, index=None, traced=False, workers=0):
    argv = [sys.executable, os.path.abspath(__file__), "--child", kind, "--tree", tree, "--workers", str(workers)]
    if index:
        argv += ["--index", index]
    if traced:
        argv.append("--tracemalloc")
    output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def best(kind, tree, index=None, workers=0):
    """Best time of REPEATS runs; peak RSS of the measured process and of its largest scan worker."""
    runs = [measure(kind, tree, index, workers=workers) for _repeat in range(REPEATS)]
    return (min(r["seconds"] for r in runs), max(r["rss_kib"] for r in runs),
            max(r.get("worker_rss_kib", 0) for r in runs))


def bench_size(base, count):
    tree = os.path.join(base, "tree-%d" % count)
    started = time.monotonic()
    generate(tree, count)
    generated = time.monotonic() - started
    index_file = os.path.join(base, "index-%d.sqlite" % count)
    _pathindex.remove_index(index_file)
    index = _pathindex.PathIndex(index_file).open()
    index.bind("bench", tree)
    first, report = timed(lambda: index.scan(tree))
    assert report.new.count == count, report.new.count
    index.mark(time.time_ns(), None, root=tree)
    index.conn.execute("PRAGMA incremental_vacuum")
    index.close()
    size = os.path.getsize(index_file)

    measure("find", tree)  # warm the cache
    find_seconds, find_rss, _none = best("find", tree)
    walk_seconds, _walk_rss, _none = best("walk", tree)
    rescan_seconds, rescan_rss, worker_rss = best("scan", tree, index_file)
    serial_seconds, serial_rss, _none = best("scan", tree, index_file, workers=1)
    heap = measure("scan", tree, index_file, traced=True, workers=1)["heap_bytes"]
    modified_runs = []
    for repeat in range(REPEATS):
        changed = modify(tree, count, 0.01, seed=repeat + 1)
        modified_runs.append(measure("scan", tree, index_file))
    modified_seconds = min(r["seconds"] for r in modified_runs)
    modified_rss = max(r["rss_kib"] for r in modified_runs)
    modified_worker_rss = max(r["worker_rss_kib"] for r in modified_runs)
    find_after, _rss, _none = best("find", tree)
    return dict(count=count, generated=generated, first=first, size=size, find=min(find_seconds, find_after),
                find_rss=find_rss, walk=walk_seconds, rescan=rescan_seconds, rescan_rss=rescan_rss, heap=heap,
                serial=serial_seconds, serial_rss=serial_rss, workers=_pathindex.scan_workers(0),
                worker_rss=max(worker_rss, modified_worker_rss), modified=modified_seconds, modified_rss=modified_rss,
                changed=changed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--keep", help="directory for the generated trees, kept between runs")
    parser.add_argument("--child", choices=["find", "walk", "scan"], help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--index", help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    base = args.keep or os.path.join(os.environ.get("TMPDIR", "/tmp"), "dir_trie_sync-bench")
    os.makedirs(base, exist_ok=True)
    try:
        results = [bench_size(base, int(size)) for size in args.sizes.split(",")]
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    for r in results:
        print_table("dir_trie_sync scan of %s files (%d per directory), warm cache, best of %d; ratio to find"
                    % ("{:,}".format(r["count"]), FILES_PER_DIR, REPEATS), [
                        ("find -printf '%p %T@ %s\\n' (baseline), files/s", r["count"] / r["find"], "files/s", 1.0),
                        ("os.walk + os.lstat (reference), files/s", r["count"] / r["walk"], "files/s",
                         r["walk"] / r["find"]),
                        ("first scan, new index, files/s", r["count"] / r["first"], "files/s", r["first"] / r["find"]),
                        ("no-change rescan, one process, files/s", r["count"] / r["serial"], "files/s",
                         r["serial"] / r["find"]),
                        ("no-change rescan, %d workers, files/s (goal <= 1.3x)" % r["workers"],
                         r["count"] / r["rescan"], "files/s", r["rescan"] / r["find"]),
                        ("rescan, %d files (1%%) modified, %d workers, files/s (goal <= 1.3x)"
                         % (r["changed"], r["workers"]),
                         r["count"] / r["modified"], "files/s", r["modified"] / r["find"]),
                        ("peak RSS, no-change rescan, one process, MiB (goal <= 80)", r["serial_rss"] / 1024.0,
                         "MiB", None),
                        ("peak RSS, no-change rescan with workers, scanning process, MiB (goal <= 80)",
                         r["rescan_rss"] / 1024.0, "MiB", None),
                        ("peak RSS, 1%-modified rescan, scanning process, MiB (goal <= 80)",
                         r["modified_rss"] / 1024.0, "MiB", None),
                        ("peak RSS, largest scan worker (incl. pages shared with the scanning process), MiB",
                         r["worker_rss"] / 1024.0, "MiB", None),
                        ("Python heap peak (tracemalloc), rescan, one process, MiB", r["heap"] / 1048576.0, "MiB",
                         None),
                        ("index size on disk, bytes per path (goal <= 40)", float(r["size"]) / r["count"], "B", None),
                    ])
    if len(results) > 1:
        first, last = results[0], results[-1]
        print("peak RSS from %s to %s files: %.1f -> %.1f MiB (x%.2f for x%.0f files)" % (
            "{:,}".format(first["count"]), "{:,}".format(last["count"]), first["rescan_rss"] / 1024.0,
            last["rescan_rss"] / 1024.0, float(last["rescan_rss"]) / first["rescan_rss"],
            float(last["count"]) / first["count"]))


if __name__ == "__main__":
    main()
