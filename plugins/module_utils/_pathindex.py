# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""The compact per-job path index of dir_trie_sync: scan + diff, and the run built on it.

One SQLite file per job, on the host that holds the source tree (it is read in full every run).
A directory is one row of ``dirs``: its name once (a trie: ``parent`` + ``name``) and its files
packed in name order: zlib-compressed NUL-joined UTF-8 ``names``, native arrays ``sizes`` (4 bytes
each when they fit) and ``mtimes`` (int64 nanoseconds), one state byte per file in ``sts`` and,
with compare=hash, the concatenated digests in ``hashes`` and the ``ctimes`` (int64 nanoseconds) they
were taken at. That is about 15 bytes per file plus its compressed name (plus digest and 8 bytes with
compare=hash), read back with a handful of C-level calls per directory; ``pending`` counts
the files not yet everywhere, so finding them never reads the whole tree.

A file's state byte is ``SYNCED`` (every destination holds this very version), ``NEW`` (never
confirmed anywhere) or ``CHANGED`` (they hold the older version kept in ``sent``); ``RETRY`` is
or-ed in after a FAILED task, so the next attempt uses ``sync_level=checksum``.

Sparse side tables, empty when a tree is replicated:
``subs`` + ``inflight``  the exact file versions each submitted task carries, committed before the
                         task is POSTed; SUCCEEDED marks exactly those versions transferred, FAILED
                         leaves them pending;
``sent``                 the version the destinations hold of a CHANGED file;
``delivered``            with several destinations, versions confirmed on some but not all (also
                         what the others hold when a destination is added);
``gone``                 paths deleted from the source awaiting a delete task (delete_destination),
                         each after the transfer that may still write it (``hold``); nothing is
                         sent to or created on a destination at or below a path it must delete;
``failures``             files whose tasks failed: retried in halves, backed off, quarantined.

The scan walks directory by directory with ``os.scandir`` on directory file descriptors (one
``fstatat`` per file, no path resolution), holding only the current directory's entries and
the stack of open ancestors, so memory stays flat as the tree grows (it grows with the largest
directory). Every directory is read every run: a file rewritten in place does not change its
directory's mtime. Once the index knows a few hundred directories, forked ``ScanWorkers`` read
subtrees beside the index in parallel (``TreeReader``, which writes nothing; the index is in WAL
mode meanwhile) and send back, in parts, only the directories that differ; the scanning process
writes those (``PathIndex._record``).

Nothing here uses AnsibleModule; ``DirTrieSync`` needs a StateDB and a TransferClient.
"""

from __future__ import annotations

import array
import collections
import contextlib
import ctypes
import datetime
import decimal
import fnmatch
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import posixpath
import re
import shutil
import signal
import sqlite3
import stat
import sys
import tempfile
import time
import zlib

from ansible_collections.scidata.replication.plugins.module_utils._errors import (
    ConfigError,
    GlobusError,
    ReplicationError,
    StateError,
)
from ansible_collections.scidata.replication.plugins.module_utils._globus import (
    api_errors,
    collection_readiness,
    new_submission_id,
    persist_submission,
    post_submission,
    resubmit_unconfirmed,
    unconfirmed_submissions,
)
from ansible_collections.scidata.replication.plugins.module_utils._names import shown_name
from ansible_collections.scidata.replication.plugins.module_utils._transfers import (
    budget_reason,
    claim_task_budget,
    identity_open_tasks,
    join_path,
    open_task_ids,
    refresh_tasks,
    render_label,
    route_task_state,
    task_files,
    transfer_document,
)

INDEX_FORMAT = 2
COMPARE_MODES = ("mtime", "mtime_size", "hash")
HASH_ALGORITHMS = ("sha256", "md5")
DIGEST_SIZES = {"sha256": 32, "md5": 16}
KIND = "dir_trie_sync"

# A file's state byte.
NEW, SYNCED, CHANGED, RETRY = 0, 1, 2, 4
ROOT_ID = 1
HASH_CHUNK = 1 << 20
COMMIT_EVERY = 50000
# A scan shares subtrees out to worker processes once the index knows this many directories.
PARALLEL_MIN_DIRS = 200
SUBTREES_PER_WORKER = 16
MAX_SCAN_WORKERS = 8
# A scan worker sends its diffs in parts of about this many files and subdirectories.
ENTRIES_PER_MESSAGE = 20000
PR_SET_PDEATHSIG = 1
WORKER_DIED = "a scan worker died: the scan stopped, what it had written stays consistent, the next run scans again"
QUERY_CHUNK = 500
# Task rows the index settles: LOST (the identity cannot see the task) and REJECTED (Globus refused
# the request) leave their files to be sent again, as FAILED does.
SETTLED_TASK_STATUSES = ("SUCCEEDED", "FAILED", "LOST", "REJECTED")
HOME_RELATIVE = ("under a top-level directory named ~ that Globus reads as the home directory (/~/): it cannot be "
                 "addressed; rename the directory or choose a source_path and destination path below /")
# A file whose ctime is this close to the end of its hashing may be rewritten within the same
# timestamp tick without its ctime moving: its ctime is stored as unknown, so the next scan hashes
# it again (coarse kernel timestamps move every 1 to 10 ms).
RACY_CTIME_NS = 100 * 10 ** 6
CACHE_KIB = 2048
PAGE_SIZE = 16384
NAMES_ZLIB_LEVEL = 6
# Sizes of a directory whose files are all under 4 GiB take 4 bytes each.
SIZE32 = "I" if array.array("I").itemsize == 4 else "q"
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)

SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE dirs (id INTEGER PRIMARY KEY AUTOINCREMENT, parent INTEGER NOT NULL, name TEXT NOT NULL, "
    "leaf INTEGER NOT NULL DEFAULT 0, sent INTEGER NOT NULL DEFAULT 0, pending INTEGER NOT NULL DEFAULT 0, "
    "sts BLOB, sizes BLOB, mtimes BLOB, names BLOB, hashes BLOB, ctimes BLOB)",
    "CREATE UNIQUE INDEX dirs_parent_name ON dirs (parent, name)",
    "CREATE INDEX dirs_unsent_leaves ON dirs (id) WHERE leaf = 1 AND sent = 0",
    # Only directories with files not yet everywhere: empty once a tree is replicated.
    "CREATE INDEX dirs_pending ON dirs (id) WHERE pending > 0",
    "CREATE TABLE sent (dir INTEGER NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
    "hash BLOB, PRIMARY KEY (dir, name)) WITHOUT ROWID",
    "CREATE TABLE dests (id INTEGER PRIMARY KEY, collection TEXT NOT NULL, path TEXT NOT NULL, "
    "active INTEGER NOT NULL DEFAULT 1)",
    "CREATE TABLE subs (id INTEGER PRIMARY KEY AUTOINCREMENT, submission_id TEXT NOT NULL UNIQUE, "
    "dest INTEGER NOT NULL, kind TEXT NOT NULL, created_at REAL NOT NULL)",
    "CREATE TABLE inflight (dir INTEGER NOT NULL, name TEXT NOT NULL, sub INTEGER NOT NULL, size INTEGER NOT NULL, "
    "mtime_ns INTEGER NOT NULL, hash BLOB, PRIMARY KEY (dir, name, sub)) WITHOUT ROWID",
    "CREATE INDEX inflight_sub ON inflight (sub)",
    "CREATE TABLE delivered (dir INTEGER NOT NULL, name TEXT NOT NULL, dest INTEGER NOT NULL, size INTEGER NOT NULL, "
    "mtime_ns INTEGER NOT NULL, hash BLOB, PRIMARY KEY (dir, name, dest)) WITHOUT ROWID",
    # ``hold``: a transfer task to the same destination that may still write the path; the
    # delete waits until it has finished.
    "CREATE TABLE gone (path TEXT NOT NULL, dest INTEGER NOT NULL, sub INTEGER, hold INTEGER, "
    "PRIMARY KEY (path, dest)) WITHOUT ROWID",
    "CREATE INDEX gone_sub ON gone (sub)",
]
# Columns added to an existing index in place, with the statement that adds each.
ADDED_COLUMNS = [("gone", "hold", "ALTER TABLE gone ADD COLUMN hold INTEGER"),
                 ("dirs", "ctimes", "ALTER TABLE dirs ADD COLUMN ctimes BLOB")]
CTIMES_ADDED = ("the index %s was upgraded to record change times: with compare=hash every file is hashed once more "
                "on this run, so a rewrite that kept size and mtime since the last run is found")
# Tables added to an existing index in place.
ADDED_TABLES = [
    # Files whose tasks failed: ``attempts`` in all, ``alone`` in a task of their own or
    # attributed to them (a skipped file), the size of their next task (``batch``: a failed task
    # is split in halves from its second failure on), not before ``next_at``; ``alone`` >=
    # max_file_failures quarantines the file.
    "CREATE TABLE IF NOT EXISTS failures (dir INTEGER NOT NULL, name TEXT NOT NULL, attempts INTEGER NOT NULL, "
    "alone INTEGER NOT NULL, batch INTEGER NOT NULL, next_at REAL NOT NULL, reason TEXT, PRIMARY KEY (dir, name)) "
    "WITHOUT ROWID",
]
MAX_FILE_FAILURES = 3
FILE_RETRY_BACKOFF = 300
FILE_RETRY_BACKOFF_MAX = 86400


# -- small helpers ----------------------------------------------------------------------------
def index_path(index_dir, job):
    """The index file of a job: one per job, named after it (unsafe characters replaced)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job)
    if safe != job:
        safe += "-" + hashlib.sha256(job.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return os.path.join(index_dir, "dir_trie_sync-%s.sqlite" % safe)


def default_index_dir(state_db):
    """Beside a SQLite state database; in the default state directory for PostgreSQL."""
    if state_db and not state_db.startswith(("postgresql://", "postgres://")) and state_db != ":memory:":
        path = state_db[len("sqlite://"):][1:] if state_db.startswith("sqlite://") else state_db
        return os.path.dirname(os.path.abspath(os.path.expanduser(path)))
    return os.path.expanduser("~/.local/state/scidata-replication")


def index_files(path):
    """The index and the SQLite side files that may sit beside it."""
    return [path] + [path + suffix for suffix in ("-journal", "-wal", "-shm")]


def label_name(path):
    """A base name fit for a task label: printable, at most 48 characters."""
    name = posixpath.basename(path.rstrip("/")) or "/"
    name = "".join(c if c.isprintable() else "?" for c in name)
    return name if len(name) <= 48 else name[:45] + "..."


def is_utf8(name):
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def under_delete(deleting, rel):
    """Whether the path ``rel`` (a file or a directory) is at or below one of the ``deleting`` paths
    (files as ``a/f``, directories as ``a/``; a file may have become a directory or back)."""
    if rel in deleting or rel + "/" in deleting:
        return True
    position = rel.find("/")
    while position != -1:
        if rel[:position] in deleting or rel[:position + 1] in deleting:
            return True
        position = rel.find("/", position + 1)
    return False


def parse_as_of(value, now=None):
    """``as_of`` as integer nanoseconds since the epoch: a number (seconds) or ISO 8601 text.

    Text without a UTC offset is local time, as the source host's clock shows it.
    """
    if value is None or isinstance(value, bool):
        raise ConfigError("as_of must be seconds since the epoch or an ISO 8601 time, got %r" % (value,))
    if isinstance(value, int):
        nanoseconds = value * 10 ** 9
    else:
        text = str(value).strip()
        try:
            nanoseconds = int(decimal.Decimal(text) * 10 ** 9)
        except (decimal.InvalidOperation, ValueError, OverflowError):
            try:
                moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise ConfigError("as_of must be seconds since the epoch or an ISO 8601 time such as "
                                  "2024-05-01T00:00:00+00:00, got %r" % (value,))
            if moment.tzinfo is None:
                moment = moment.astimezone()
            epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
            nanoseconds = (moment - epoch) // datetime.timedelta(microseconds=1) * 1000
    limit = ((now if now is not None else time.time()) + 60) * 10 ** 9
    if nanoseconds > limit:
        raise ConfigError("as_of %r is in the future: marking files that are still being written as "
                          "transferred would lose them" % (value,))
    return nanoseconds


def _compile_patterns(patterns):
    """Globs matched against the path relative to src_dir; a glob without ``/`` also matches names."""
    compiled = []
    for pattern in patterns or ():
        pattern = pattern.strip("/")
        compiled.append((re.compile(fnmatch.translate(pattern)), "/" not in pattern))
    return compiled


def _matches(compiled, rel, name):
    for regex, by_name in compiled:
        if regex.match(rel) or (by_name and regex.match(name)):
            return True
    return False


def same_version(compare, left, right):
    """Whether two (size, mtime_ns, hash) versions count as the same file content."""
    if compare == "mtime":
        return left[1] == right[1]
    if compare == "hash" and left[2] is not None and right[2] is not None:
        return left[2] == right[2]
    return left[0] == right[0] and left[1] == right[1]


def settled_ctime(ctime_ns):
    """The ctime to keep for a file just hashed: 0 (unknown, hashed again next scan) while a rewrite
    could still leave it where it is."""
    return ctime_ns if time.time_ns() - ctime_ns >= RACY_CTIME_NS else 0


def file_digest(dir_fd, name, algorithm):
    """The digest of a file's contents, read in chunks, without following a symlink."""
    digest = hashlib.new(algorithm, usedforsecurity=False)  # change detection, not security (FIPS hosts)
    descriptor = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    with os.fdopen(descriptor, "rb") as handle:
        while True:
            block = handle.read(HASH_CHUNK)
            if not block:
                break
            digest.update(block)
    return digest.digest()


class Sample(object):
    """A count and the first ``limit`` paths."""

    __slots__ = ("count", "paths", "limit")

    def __init__(self, limit):
        self.count = 0
        self.paths = []
        self.limit = limit

    def add(self, rel, detail=None):
        self.count += 1
        if len(self.paths) < self.limit:
            self.paths.append(shown_name(rel) if detail is None else "%s (%s)" % (shown_name(rel), detail))


class ScanReport(object):
    """What one scan found, relative to the index before it."""

    KINDS = ("new", "modified", "deleted", "symlinks", "special", "skipped", "unreadable", "excluded")

    def __init__(self, sample_size):
        for kind in self.KINDS:
            setattr(self, kind, Sample(sample_size))
        self.unchanged = 0
        self.files = 0
        self.directories = 0
        self.index_changed = False
        self.seconds = 0.0
        self.workers = 0

    def merge(self, other):
        """Add what a scan worker found in its part of the tree."""
        for kind in self.KINDS:
            mine, theirs = getattr(self, kind), getattr(other, kind)
            mine.count += theirs.count
            mine.paths.extend(theirs.paths[:mine.limit - len(mine.paths)])
        self.unchanged += other.unchanged
        self.files += other.files
        self.directories += other.directories

    def as_dict(self):
        counts = dict((kind, getattr(self, kind).count) for kind in self.KINDS)
        counts.update(unchanged=self.unchanged, files=self.files, directories=self.directories)
        samples = dict((kind, getattr(self, kind).paths) for kind in self.KINDS)
        return counts, samples


class Packed(object):
    """One directory's files as stored in its row: parallel sequences in name order."""

    __slots__ = ("names", "sizes", "mtimes", "sts", "hashes", "ctimes", "digest_size", "names_blob")

    def __init__(self, names, sizes, mtimes, sts, hashes, digest_size, names_blob=None, ctimes=None):
        self.names_blob = names_blob
        self.names = names
        self.sizes = sizes
        self.mtimes = mtimes
        self.sts = sts
        self.hashes = hashes
        # With compare=hash: each file's st_ctime_ns when it was last hashed (None: not known).
        self.ctimes = ctimes
        self.digest_size = digest_size

    @classmethod
    def empty(cls, digest_size):
        return cls([], array.array("q"), array.array("q"), bytearray(), None, digest_size)

    @classmethod
    def from_row(cls, row, digest_size):
        sts, sizes, mtimes, names, hashes, ctimes = row
        if not sts:
            return cls.empty(digest_size)
        size_array = array.array(SIZE32 if len(sizes) == 4 * len(sts) else "q")
        size_array.frombytes(sizes)
        mtime_array = array.array("q")
        mtime_array.frombytes(mtimes)
        hashes = bytes(hashes) if hashes and digest_size and len(hashes) == len(sts) * digest_size else None
        ctime_array = None
        if hashes is not None and ctimes and len(ctimes) == 8 * len(sts):
            ctime_array = array.array("q")
            ctime_array.frombytes(ctimes)
        return cls(zlib.decompress(names).decode("utf-8").split("\0"), size_array, mtime_array, bytearray(sts), hashes,
                   digest_size, names, ctime_array)

    def digest(self, position):
        if self.hashes is None:
            return None
        value = self.hashes[position * self.digest_size:(position + 1) * self.digest_size]
        return value if value.strip(b"\0") else None

    def ctime(self, position):
        return 0 if self.ctimes is None else self.ctimes[position]

    def pending(self):
        return len(self.sts) - self.sts.count(SYNCED)


def pack_entries(entries, digest_size):
    """Row values (sts, sizes, mtimes, names, hashes, ctimes, pending) for (name, size, mtime_ns, st, digest,
    ctime_ns) tuples; digests and change times are kept with compare=hash only (``digest_size``)."""
    if not entries:
        return None, None, None, None, None, None, 0
    entries.sort(key=lambda entry: entry[0])
    sts = bytes(entry[3] for entry in entries)
    hashes = ctimes = None
    if digest_size:
        zero = b"\0" * digest_size
        hashes = b"".join(entry[4] or zero for entry in entries)
        ctimes = array.array("q", [entry[5] for entry in entries]).tobytes()
    sizes = [entry[1] for entry in entries]
    return (sts, array.array(SIZE32 if max(sizes) < 1 << 32 and min(sizes) >= 0 else "q", sizes).tobytes(),
            array.array("q", [entry[2] for entry in entries]).tobytes(),
            zlib.compress("\0".join(entry[0] for entry in entries).encode("utf-8"), NAMES_ZLIB_LEVEL), hashes,
            ctimes, len(sts) - sts.count(SYNCED))


# -- reading the tree beside the index -----------------------------------------------------------
def load_packed(conn, dir_id, digest_size):
    row = conn.execute("SELECT sts, sizes, mtimes, names, hashes, ctimes FROM dirs WHERE id = ?", (dir_id,)).fetchone()
    if row is None or not row[0]:
        return Packed.empty(digest_size)
    return Packed.from_row(row, digest_size)


def open_below(root_fd, rel, report):
    """A directory below src_dir opened one name at a time, following no symlink; None when it
    cannot be opened (gone since it was listed, or reported unreadable)."""
    fd = root_fd
    try:
        for name in rel.split("/"):
            parent_fd, fd = fd, os.open(name, _DIR_FLAGS, dir_fd=fd)
            if parent_fd != root_fd:
                os.close(parent_fd)
    except OSError as exc:
        if fd != root_fd:
            os.close(fd)
        if not isinstance(exc, FileNotFoundError):
            report.unreadable.add(rel + "/", exc.strerror)
        return None
    return fd


def files_below(dir_fd, name, rel):
    """The paths of the regular files below the directory ``name`` of ``dir_fd`` (at ``rel``), following
    no symlink: what a directory that cannot be replicated keeps from the destinations."""
    for top, _dirs, files, top_fd in os.fwalk(name, dir_fd=dir_fd):
        prefix = rel + top[len(name):] + "/"
        for file_name in sorted(files):
            try:
                if stat.S_ISREG(os.stat(file_name, dir_fd=top_fd, follow_symlinks=False).st_mode):
                    yield prefix + file_name
            except OSError:
                continue  # gone since it was listed


def row_check(packed):
    """What identifies the file positions of a directory's row: its names."""
    return len(packed.names), zlib.crc32(packed.names_blob or b"")


class DirDiff(object):
    """One directory as found on disk against its index row: what the scan must write for it.

    ``changed`` holds (position, size, mtime_ns, ctime_ns) of files whose size or mtime moved (or, with
    compare=hash, their ctime: a rewrite that kept both, or no ctime known), ``vanished``
    name -> position of files gone, ``dropped`` positions of files now excluded; ``subdirs`` the
    subdirectories on disk as (name, (id, leaf)), with None for the row of a new one, and
    ``dropped_dirs`` / ``vanished_dirs`` (name, (id, leaf)) of known ones excluded or gone;
    ``row_check`` identifies the row the positions refer to.
    """

    __slots__ = ("dir_id", "rel", "leaf", "is_leaf", "packed", "row_check", "added", "changed", "vanished",
                 "dropped", "subdirs", "dropped_dirs", "vanished_dirs")

    def size(self):
        return (1 + len(self.added) + len(self.changed) + len(self.vanished) + len(self.dropped)
                + len(self.subdirs))

    def needs_writes(self):
        return bool(self.added or self.changed or self.vanished or self.dropped or self.dropped_dirs
                    or self.vanished_dirs or self.is_leaf != self.leaf
                    or any(row is None for _name, row in self.subdirs))


class TreeReader(object):
    """Reads directories of the source beside their index rows and writes nothing: the first half
    of scanning a directory, done by the scanning process or by a scan worker."""

    def __init__(self, conn, digest_size, include, exclude, skip_rel, report):
        self.conn = conn
        self.digest_size = digest_size
        self.include = _compile_patterns(include)
        self.exclude = _compile_patterns(exclude)
        self.skip = set(skip_rel)
        self.report = report

    def read(self, dir_id, dir_fd, rel, leaf):
        """The ``DirDiff`` of one open directory, or None when it cannot be listed."""
        report = self.report
        report.directories += 1
        packed = load_packed(self.conn, dir_id, self.digest_size)
        known = dict(zip(packed.names, range(len(packed.names))))
        known_dirs = dict((row[0], row[1:]) for row in self.conn.execute(
            "SELECT name, id, leaf FROM dirs WHERE parent = ?", (dir_id,)))
        sizes, mtimes = packed.sizes, packed.mtimes
        # With compare=hash a file is hashed again when its ctime moved: a rewrite may keep size and
        # mtime (or set the mtime back), but nobody can set the ctime back.
        by_ctime = bool(self.digest_size)
        ctimes = packed.ctimes
        include, exclude, skip = self.include, self.exclude, self.skip
        filtered = bool(include or exclude or skip)
        added, changed, subdirs, dropped, dropped_dirs = [], [], [], [], []
        files = 0
        known_pop = known.pop
        try:
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    name = entry.name
                    if entry.is_file(follow_symlinks=False):
                        if not name.isascii() and not is_utf8(name):
                            report.skipped.add(rel + "/" + name if rel else name)
                            continue
                        if filtered:
                            path = rel + "/" + name if rel else name
                            if path in skip or _matches(exclude, path, name) or (
                                    include and not _matches(include, path, name)):
                                position = known_pop(name, None)
                                if position is not None:
                                    dropped.append(position)
                                report.excluded.add(path)
                                continue
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        except OSError as exc:
                            known_pop(name, None)  # keep its entry: we do not know what it is now
                            report.unreadable.add(rel + "/" + name if rel else name, exc.strerror)
                            continue
                        files += 1
                        position = known_pop(name, None)
                        if position is None:
                            added.append((name, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
                        elif mtimes[position] != info.st_mtime_ns or sizes[position] != info.st_size or (
                                by_ctime and (ctimes is None or ctimes[position] != info.st_ctime_ns)):
                            changed.append((position, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
                    elif entry.is_dir(follow_symlinks=False):
                        path = rel + "/" + name if rel else name
                        if not name.isascii() and not is_utf8(name):
                            report.skipped.add(path + "/")
                            for below in files_below(dir_fd, name, path):
                                report.skipped.add(below)
                            continue
                        if filtered and (path in skip or _matches(exclude, path, name)):
                            if name in known_dirs:
                                dropped_dirs.append((name, known_dirs.pop(name)))
                            report.excluded.add(path + "/")
                            continue
                        subdirs.append((name, known_dirs.pop(name, None)))
                    elif entry.is_symlink():
                        report.symlinks.add(rel + "/" + name if rel else name)
                    else:
                        report.special.add(rel + "/" + name if rel else name)
        except OSError as exc:
            report.unreadable.add((rel or ".") + "/", exc.strerror)
            return None
        report.files += files
        report.unchanged += files - len(added) - len(changed)
        subdirs.sort(key=lambda subdir: subdir[0])
        diff = DirDiff()
        diff.dir_id, diff.rel, diff.leaf, diff.packed = dir_id, rel, leaf, packed
        diff.row_check = row_check(packed)
        diff.is_leaf = 0 if (subdirs or files) else 1
        diff.added, diff.changed, diff.vanished, diff.dropped = added, changed, known, dropped
        diff.subdirs, diff.dropped_dirs, diff.vanished_dirs = subdirs, dropped_dirs, sorted(known_dirs.items())
        return diff

    def read_subtree(self, root_fd, dir_id, rel, leaf):
        """Yields the diffs that need writing in a known subtree, depth first, with only the
        directories on the way down open (a scan worker's task). A subdirectory new since the
        last run is left to the scanning process, which gives it an id first."""
        top_fd = open_below(root_fd, rel, self.report)
        if top_fd is None:
            return
        opened = [(top_fd, dir_id, rel, leaf)]  # a directory opened, not read yet
        stack = []  # the open ancestors: (fd, rel, iterator over their known subdirectories)
        try:
            while opened or stack:
                if opened:
                    dir_fd, dir_id, rel, leaf = opened.pop()
                    try:
                        diff = self.read(dir_id, dir_fd, rel, leaf)
                    except BaseException:
                        os.close(dir_fd)
                        raise
                    if diff is None:
                        os.close(dir_fd)
                        continue
                    stack.append((dir_fd, rel, iter([s for s in diff.subdirs if s[1] is not None])))
                    if diff.needs_writes():
                        diff.packed = None  # the scanning process reads the row again
                        yield diff
                    continue
                dir_fd, rel, children = stack[-1]
                child = next(children, None)
                if child is None:
                    stack.pop()
                    os.close(dir_fd)
                    continue
                name, row = child
                child_rel = rel + "/" + name
                try:
                    opened.append((os.open(name, _DIR_FLAGS, dir_fd=dir_fd), row[0], child_rel, row[1]))
                except OSError as exc:
                    if not isinstance(exc, FileNotFoundError):
                        self.report.unreadable.add(child_rel + "/", exc.strerror)
        finally:
            for entry in opened + stack:
                os.close(entry[0])


class ScanWorkers(object):
    """Processes that read subtrees of src_dir beside the index (``TreeReader.read_subtree``).

    They are forked while the scanning process holds no connection to the index: an SQLite
    connection must not cross a fork, and a child's own connection to a file its parent has open
    would share the parent's lock records. Each reads the index (in WAL mode while they run)
    through its own connection, and src_dir through the descriptor the scanning process opened.
    """

    def __init__(self, count, setup):
        context = multiprocessing.get_context("fork")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # a child flushes its copy of these buffers when it ends
        self.conns, self.processes = [], []
        try:
            for _number in range(count):
                ours, theirs = context.Pipe()
                self.conns.append(ours)
                try:
                    process = context.Process(target=_scan_worker, args=(theirs, list(self.conns), setup),
                                              daemon=True)
                    process.start()
                finally:
                    theirs.close()
                self.processes.append(process)
        except BaseException:
            self.close(kill=True)
            raise

    def run(self, tasks):
        """Yields (diffs, report) as workers send them: diffs in parts as they go, and each task's
        report with its last part. One task (a list of subtrees) per worker at a time."""
        tasks = iter(tasks)
        busy = set()
        for conn in self.conns:
            if self._send(conn, tasks):
                busy.add(conn)
        while busy:
            for conn in multiprocessing.connection.wait(list(busy)):
                try:
                    kind, diffs, report = conn.recv()
                except EOFError:
                    raise ReplicationError(WORKER_DIED)
                if kind == "error":
                    raise ReplicationError("a scan worker failed: %s" % diffs)
                if kind == "done" and not self._send(conn, tasks):
                    busy.discard(conn)
                yield diffs, report

    @staticmethod
    def _send(conn, tasks):
        task = next(tasks, None)
        if task is not None:
            try:
                conn.send(task)
            except OSError:
                raise ReplicationError(WORKER_DIED)
        return task is not None

    def close(self, kill=False):
        """Stop the workers: asked to end, or killed (when the scan failed, they may be busy)."""
        for conn in self.conns:
            try:
                if not kill:
                    conn.send(None)
            except (OSError, ValueError):
                pass
            finally:
                conn.close()
        deadline = time.monotonic() + (0 if kill else 5)
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join()


def _scan_worker(conn, inherited, setup):
    """A scan worker's loop: read subtrees until told to stop or the scanning process is gone."""
    parent_pid, index_path, digest_size, root_fd, include, exclude, skip_rel, sample_size = setup
    _die_with(parent_pid)
    for other in inherited:
        other.close()
    # The module's stdout carries its result: a worker must neither write to it nor hold it open.
    devnull = os.open(os.devnull, os.O_RDWR)
    for descriptor in (0, 1, 2):
        os.dup2(devnull, descriptor)
    os.close(devnull)
    failure = None
    try:
        db = sqlite3.connect(index_path, isolation_level=None, timeout=30)
        db.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        db, failure = None, "cannot open %s: %s" % (index_path, exc)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        if db is None:
            conn.send(("error", failure, None))
            continue
        report = ScanReport(sample_size)
        reader = TreeReader(db, digest_size, include, exclude, skip_rel, report)
        try:
            diffs = _read_task(conn, reader, root_fd, task)
        except Exception as exc:  # pylint: disable=broad-except
            conn.send(("error", "%s: %s" % (type(exc).__name__, exc), None))  # reported by the scanning process
            continue
        conn.send(("done", diffs, report))


def _read_task(conn, reader, root_fd, task):
    """Read a task's subtrees, sending their diffs in parts as they grow; returns the last part."""
    diffs, size = [], 0
    for subtree in task:
        for diff in reader.read_subtree(root_fd, *subtree):
            diffs.append(diff)
            size += diff.size()
            if size >= ENTRIES_PER_MESSAGE:
                conn.send(("part", diffs, None))
                diffs, size = [], 0
    return diffs


def _die_with(parent_pid):
    """Have the kernel kill this worker when the scanning process dies (Linux): the worker holds
    copies of its descriptors, the job's run lock among them."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # elsewhere a worker ends when it finds its pipe closed
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


# -- the index file ----------------------------------------------------------------------------
class PathIndex(object):
    """One job's index: a SQLite file with explicit transactions (autocommit outside them)."""

    def __init__(self, path, compare="mtime_size", hash_algorithm="sha256"):
        self.path = path
        self.compare = compare
        self.hash_algorithm = hash_algorithm
        self.digest_size = DIGEST_SIZES[hash_algorithm] if compare == "hash" else 0
        self.conn = None
        self._in_transaction = False
        self._dir_paths = {}
        self._pending_writes = 0
        self._scan_state = None
        self._reader = None
        self.wal = False
        self.max_file_failures = MAX_FILE_FAILURES
        self.file_retry_backoff = FILE_RETRY_BACKOFF
        # What opening the index changed that a run should tell (an upgrade in place).
        self.notes = []

    # -- connection -------------------------------------------------------------------------
    def open(self, wal=False):
        """Open (creating) the index; in WAL mode when asked and the file system allows it (scan
        workers read it while this process writes), in rollback-journal mode otherwise."""
        exists = os.path.exists(self.path)
        try:
            parent = os.path.dirname(self.path)
            if parent and not os.path.isdir(parent):
                os.makedirs(parent, mode=0o700)
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            if not exists:
                self.conn.execute("PRAGMA page_size = %d" % PAGE_SIZE)
                self.conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = self.conn.execute("PRAGMA journal_mode = %s" % ("WAL" if wal else "DELETE")).fetchone()[0]
            self.wal = mode.lower() == "wal"
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA cache_size = -%d" % CACHE_KIB)
            self.conn.execute("PRAGMA temp_store = FILE")
            if not self._has_schema():
                self._create()
            version = self.meta("format")
            if version != INDEX_FORMAT:
                raise StateError("the index %s has format %r; this collection reads format %d (state=reset "
                                 "starts a new one)" % (self.path, version, INDEX_FORMAT))
            self._add_columns(exists)
        except sqlite3.Error as exc:
            self.close()
            raise StateError("cannot open the index %s: %s" % (self.path, exc))
        except StateError:
            self.close()
            raise
        return self

    def _has_schema(self):
        return bool(self.conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'meta'").fetchone()[0])

    def _add_columns(self, existed):
        for table, column, statement in ADDED_COLUMNS:
            if column not in [row[1] for row in self.conn.execute("PRAGMA table_info(%s)" % table)]:
                self.conn.execute(statement)
                if existed and column == "ctimes" and self.compare == "hash":
                    self.notes.append(CTIMES_ADDED % self.path)
        for statement in ADDED_TABLES:
            self.conn.execute(statement)

    def _create(self):
        with self.transaction():
            for statement in SCHEMA:
                self.conn.execute(statement)
            self.conn.execute("INSERT INTO dirs (id, parent, name) VALUES (?, 0, '')", (ROOT_ID,))
            self.set_meta("format", INDEX_FORMAT)
            self.set_meta("created_at", time.time())

    def close(self):
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                if self._in_transaction:
                    self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None
            self._in_transaction = False

    @contextlib.contextmanager
    def transaction(self):
        """Statements inside commit together; a nested use joins the outer transaction."""
        if self._in_transaction:
            yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield self
        except BaseException:
            self._in_transaction = False
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        self._in_transaction = False
        self.commit_now()

    def commit_now(self):
        self.conn.execute("COMMIT")

    def _checkpoint(self):
        """Inside a long scan: commit what is done so far and go on in a new transaction."""
        if self._in_transaction and self._pending_writes >= COMMIT_EVERY:
            self.commit_now()
            self.conn.execute("BEGIN IMMEDIATE")
            self._pending_writes = 0

    def compact(self):
        """Give free pages back when more than a quarter of the file is free (after a big sync)."""
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        if pages > 4 and free * 4 > pages:
            self.conn.execute("PRAGMA incremental_vacuum")
            return True
        return False

    # -- meta -------------------------------------------------------------------------------
    def meta(self, key, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key, value):
        self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                          "value = excluded.value", (key, value))

    def bind(self, job, src_dir):
        """Tie a new index to its job and source; refuse an index that belongs to another source."""
        with self.transaction():
            known = self.meta("src_dir")
            if known is None:
                self.set_meta("job", job)
                self.set_meta("src_dir", src_dir)
            elif known != src_dir:
                raise ConfigError("the index %s belongs to src_dir %s, not %s: use another job name, or "
                                  "state=reset to start this job over" % (self.path, known, src_dir))
            algorithm = self.meta("hash_algorithm")
            if self.compare == "hash" and algorithm != self.hash_algorithm:
                if algorithm is not None:
                    # Digests of another algorithm cannot be compared: forget them (size+mtime decide).
                    for table in ("sent", "inflight", "delivered"):
                        self.conn.execute("UPDATE %s SET hash = NULL WHERE hash IS NOT NULL" % table)
                self.conn.execute("UPDATE dirs SET hashes = NULL, ctimes = NULL WHERE hashes IS NOT NULL")
                self.set_meta("hash_algorithm", self.hash_algorithm)

    def set_destinations(self, destinations):
        """Record the destinations; returns (ids in order, ids of destinations added to a known set).

        A destination added later is offered every file: the others keep what they hold (their
        versions go to ``delivered``), so nothing is sent to them again. A destination removed
        stops counting: its queued deletes are dropped, and a file every remaining destination
        holds is done.
        """
        wanted = [(d["collection"], d["path"]) for d in destinations]
        if len(set(wanted)) != len(wanted):
            raise ConfigError("destinations must differ (collection and path)")
        with self.transaction():
            active = dict(((r[1], r[2]), r[0]) for r in self.conn.execute(
                "SELECT id, collection, path FROM dests WHERE active = 1"))
            removed = [dest_id for key, dest_id in active.items() if key not in wanted]
            for dest_id in removed:
                self.conn.execute("UPDATE dests SET active = 0 WHERE id = ?", (dest_id,))
                self.conn.execute("DELETE FROM delivered WHERE dest = ?", (dest_id,))
                self.conn.execute("DELETE FROM gone WHERE dest = ? AND sub IS NULL", (dest_id,))
            kept = [active[key] for key in wanted if key in active]
            ids, added = [], []
            for key in wanted:
                if key in active:
                    ids.append(active[key])
                else:
                    added.append(self.conn.execute("INSERT INTO dests (collection, path) VALUES (?, ?)", key).lastrowid)
                    ids.append(added[-1])
            if added and kept:
                self._hold_for(kept)
                self.conn.execute("UPDATE dirs SET sent = 0 WHERE sent != 0")
            elif removed and kept:
                self._complete_delivered(kept)
        return ids, added if kept else []

    def _hold_for(self, dest_ids):
        """Files every destination in ``dest_ids`` holds become pending, recorded as delivered to
        those destinations: only a destination that lacks them is offered them."""
        for dir_id, in self.conn.execute("SELECT id FROM dirs WHERE sts IS NOT NULL AND length(sts) > 0").fetchall():
            packed = self.load(dir_id)
            rows = []
            for position, name in enumerate(packed.names):
                if packed.sts[position] == SYNCED:
                    packed.sts[position] = NEW
                    rows.extend((dir_id, name, dest, packed.sizes[position], packed.mtimes[position],
                                 packed.digest(position)) for dest in dest_ids)
            if rows:
                self.conn.executemany("INSERT INTO delivered (dir, name, dest, size, mtime_ns, hash) VALUES "
                                      "(?, ?, ?, ?, ?, ?) ON CONFLICT (dir, name, dest) DO NOTHING", rows)
                self.store_states(dir_id, packed)

    def _complete_delivered(self, dest_ids):
        """Files every destination in ``dest_ids`` holds in their current version are done."""
        for dir_id, in self.conn.execute("SELECT DISTINCT dir FROM delivered").fetchall():
            packed = self.load(dir_id)
            positions = dict(zip(packed.names, range(len(packed.names))))
            holders = collections.defaultdict(set)
            for name, dest, size, mtime_ns in self.conn.execute(
                    "SELECT name, dest, size, mtime_ns FROM delivered WHERE dir = ?", (dir_id,)):
                position = positions.get(name)
                if position is not None and (size, mtime_ns) == (packed.sizes[position], packed.mtimes[position]):
                    holders[name].add(dest)
            done = [name for name, dests in holders.items() if dests.issuperset(dest_ids)]
            for name in done:
                packed.sts[positions[name]] = SYNCED
                self.conn.execute("DELETE FROM delivered WHERE dir = ? AND name = ?", (dir_id, name))
                self.conn.execute("DELETE FROM sent WHERE dir = ? AND name = ?", (dir_id, name))
            if done:
                self.store_states(dir_id, packed)

    # -- rows and paths -----------------------------------------------------------------------
    def load(self, dir_id):
        return load_packed(self.conn, dir_id, self.digest_size)

    def store(self, dir_id, entries):
        values = pack_entries(entries, self.digest_size)
        self.conn.execute("UPDATE dirs SET sts = ?, sizes = ?, mtimes = ?, names = ?, hashes = ?, ctimes = ?, pending = ? "
                          "WHERE id = ?", values + (dir_id,))

    def store_states(self, dir_id, packed):
        self.conn.execute("UPDATE dirs SET sts = ?, pending = ? WHERE id = ?",
                          (bytes(packed.sts), packed.pending(), dir_id))

    def sent_version(self, dir_id, name):
        row = self.conn.execute("SELECT size, mtime_ns, hash FROM sent WHERE dir = ? AND name = ?",
                                (dir_id, name)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def dir_path(self, dir_id):
        """The directory's path relative to src_dir ('' for src_dir itself), cached."""
        path = self._dir_paths.get(dir_id)
        if path is not None:
            return path
        chain, current = [], dir_id
        while current != ROOT_ID:
            cached = self._dir_paths.get(current)
            if cached is not None:
                chain.append(cached)
                break
            row = self.conn.execute("SELECT parent, name FROM dirs WHERE id = ?", (current,)).fetchone()
            if row is None:
                return None
            chain.append(row[1])
            current = row[0]
        path = "/".join(reversed(chain))
        if len(self._dir_paths) > 100000:
            self._dir_paths.clear()
        self._dir_paths[dir_id] = path
        return path

    def file_path(self, dir_id, name):
        parent = self.dir_path(dir_id)
        if parent is None:
            return None
        return parent + "/" + name if parent else name

    def lookup(self, rel):
        """(dir id, file name or None) for a path relative to src_dir, or None when not indexed."""
        current = ROOT_ID
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        for position, part in enumerate(parts):
            row = self.conn.execute("SELECT id FROM dirs WHERE parent = ? AND name = ?", (current, part)).fetchone()
            if row is None:
                if position == len(parts) - 1 and part in self.load(current).names:
                    return current, part
                return None
            current = row[0]
        return current, None

    def subtree(self, dir_id):
        return [row[0] for row in self.conn.execute(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL SELECT d.id FROM dirs AS d JOIN sub ON d.parent = sub.id) "
            "SELECT id FROM sub", (dir_id,))]

    # -- counts -----------------------------------------------------------------------------
    def counts(self):
        pending = self.conn.execute(
            "SELECT COALESCE(SUM(pending), 0) FROM dirs INDEXED BY dirs_pending WHERE pending > 0").fetchone()[0]
        in_flight = self.conn.execute("SELECT count(*) FROM (SELECT DISTINCT dir, name FROM inflight)").fetchone()[0]
        open_subs = self.conn.execute("SELECT count(*) FROM subs").fetchone()[0]
        empty_dirs = self.conn.execute(
            "SELECT count(*) FROM dirs INDEXED BY dirs_unsent_leaves WHERE leaf = 1 AND sent = 0").fetchone()[0]
        deletes = self.conn.execute(
            "SELECT count(*) FROM gone WHERE dest IN (SELECT id FROM dests WHERE active = 1)").fetchone()[0]
        return dict(pending=pending, in_flight=in_flight, open_tasks=open_subs, empty_dirs_pending=empty_dirs,
                    deletes_pending=deletes)

    def total_files(self):
        return self.conn.execute("SELECT COALESCE(SUM(length(sts)), 0) FROM dirs").fetchone()[0]

    # -- scan -------------------------------------------------------------------------------
    def scan(self, root, include=(), exclude=(), sample_size=20, gone_dests=None, skip_rel=(), workers=1,
             min_dirs=PARALLEL_MIN_DIRS, subtrees_per_worker=SUBTREES_PER_WORKER):
        """Walk ``root`` and bring the index up to date; returns a ``ScanReport``.

        ``gone_dests``: destination ids that must get a delete for every sent file that vanished
        (delete_destination); ``skip_rel``: relative paths never indexed (the index itself);
        ``workers``: processes that read subtrees in parallel once the index knows ``min_dirs``
        directories, the top of the tree split here into ``subtrees_per_worker`` subtrees per
        worker (this process then only writes what they found changed).
        """
        report = ScanReport(sample_size)
        started = time.monotonic()
        root_fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        pool = None
        try:
            known_dirs = self.conn.execute("SELECT count(*) FROM dirs").fetchone()[0]
            if workers > 1 and known_dirs >= min_dirs and not self._in_transaction:
                pool = self._start_workers(workers, (os.getpid(), self.path, self.digest_size, root_fd, include,
                                                     exclude, skip_rel, sample_size))
                report.workers = workers if pool else 0
            self._reader = TreeReader(self.conn, self.digest_size, include, exclude, skip_rel, report)
            self._scan_state = dict(
                report=report, gone_dests=list(gone_dests or ()),
                has_side=any(self.conn.execute("SELECT 1 FROM %s LIMIT 1" % t).fetchone()
                             for t in ("sent", "delivered")),
                has_gone=self.conn.execute("SELECT 1 FROM gone WHERE sub IS NULL LIMIT 1").fetchone() is not None,
                has_inflight=self.conn.execute("SELECT 1 FROM inflight LIMIT 1").fetchone() is not None,
                has_failures=self.conn.execute("SELECT 1 FROM failures LIMIT 1").fetchone() is not None,
                new_state=NEW | RETRY if self.meta("resend_by_checksum") else NEW,
            )
            with self.transaction():
                self._pending_writes = 0
                root_row = self.conn.execute("SELECT leaf, sent FROM dirs WHERE id = ?", (ROOT_ID,)).fetchone()
                children = self._scan_dir(ROOT_ID, root_fd, "", root_row[0])
                if children is None:
                    raise ReplicationError("cannot read src_dir %s" % root)
                if pool is None:
                    self._walk(root_fd, "", children)
                else:
                    self._scan_with_workers(pool, root_fd, children, workers * subtrees_per_worker)
                self.conn.execute("DELETE FROM meta WHERE key = 'resend_by_checksum'")
        except BaseException:
            if pool is not None:
                pool.close(kill=True)
                pool = None
            raise
        finally:
            if pool is not None:
                pool.close()
            os.close(root_fd)
            self._scan_state = self._reader = None
        report.seconds = time.monotonic() - started
        return report

    def _start_workers(self, count, setup):
        """Scan workers, or None where the index cannot be shared in WAL mode (then this process
        scans alone). Forked while this process has no connection to the index: see ScanWorkers."""
        self.close()
        try:
            self.open(wal=True)
        except StateError:
            self.open()
            return None
        if not self.wal:
            return None
        self.close()
        try:
            return ScanWorkers(count, setup)
        finally:
            self.open(wal=True)

    def _walk(self, top_fd, top_rel, children):
        """Scan, depth first, the subdirectories ``children`` of the open directory ``top_fd``."""
        report = self._scan_state["report"]
        stack = [(top_fd, top_rel, iter(children))]
        try:
            while stack:
                parent_fd, parent_rel, pending = stack[-1]
                child = next(pending, None)
                if child is None:
                    stack.pop()
                    if parent_fd != top_fd:
                        os.close(parent_fd)
                    continue
                child_id, name, leaf, _known = child
                rel = parent_rel + "/" + name if parent_rel else name
                try:
                    child_fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
                except OSError as exc:
                    if not isinstance(exc, FileNotFoundError):
                        report.unreadable.add(rel + "/", exc.strerror)
                    continue
                grandchildren = self._scan_dir(child_id, child_fd, rel, leaf)
                if grandchildren is None:
                    os.close(child_fd)
                    continue
                stack.append((child_fd, rel, iter(grandchildren)))
                self._checkpoint()
        finally:
            for parent_fd, _rel, _pending in stack:
                if parent_fd != top_fd:
                    with contextlib.suppress(OSError):
                        os.close(parent_fd)

    def _scan_with_workers(self, pool, root_fd, children, wanted):
        """Share the known subtrees out to the workers; write what they found, and scan the
        directories new since the last run here (everything in them is new anyway)."""
        report = self._scan_state["report"]
        subtrees = collections.deque()

        def take(parent_fd, parent_rel, found):
            for child_id, name, leaf, known in found:
                rel = parent_rel + "/" + name if parent_rel else name
                if known:
                    subtrees.append((child_id, rel, leaf))
                else:
                    self._walk(parent_fd, parent_rel, [(child_id, name, leaf, known)])

        take(root_fd, "", children)
        # Split the top of the tree here until there are enough subtrees to keep every worker busy.
        while subtrees and len(subtrees) < wanted:
            dir_id, rel, leaf = subtrees.popleft()
            dir_fd = open_below(root_fd, rel, report)
            if dir_fd is None:
                continue
            try:
                found = self._scan_dir(dir_id, dir_fd, rel, leaf)
                if found is not None:
                    take(dir_fd, rel, found)
            finally:
                os.close(dir_fd)
            self._checkpoint()
        # Many small subtrees (a flat tree) go out several to a message.
        subtrees = list(subtrees)
        batch = max(1, len(subtrees) // (wanted * 4))
        tasks = [subtrees[start:start + batch] for start in range(0, len(subtrees), batch)]
        for diffs, part in pool.run(tasks):
            if part is not None:
                report.merge(part)
            for diff in diffs:
                dir_fd = open_below(root_fd, diff.rel, report)
                if dir_fd is None:
                    continue  # gone since the worker read it: the next run prunes it
                try:
                    diff.packed = self.load(diff.dir_id)
                    if row_check(diff.packed) != diff.row_check:
                        raise StateError("the index %s changed under this scan: another process writes to it"
                                         % self.path)
                    found = self._record(diff, dir_fd)
                    take(dir_fd, diff.rel, [child for child in found if not child[3]])
                finally:
                    os.close(dir_fd)
                self._checkpoint()

    def _scan_dir(self, dir_id, dir_fd, rel, leaf):
        """Diff one directory against the index and write the difference; returns its
        subdirectories to visit, or None when it cannot be read (its entries are then kept)."""
        diff = self._reader.read(dir_id, dir_fd, rel, leaf)
        if diff is None:
            return None
        return self._record(diff, dir_fd)

    def _record(self, diff, dir_fd):
        """Write one directory's difference; returns its subdirectories as (id, name, leaf, known)."""
        state = self._scan_state
        conn = self.conn
        dir_id, rel = diff.dir_id, diff.rel
        writes = 0
        if diff.added or diff.changed or diff.vanished or diff.dropped:
            writes += self._apply(dir_id, dir_fd, rel, diff.packed, diff.added, diff.changed, diff.vanished,
                                  diff.dropped, state)
        for _name, row in diff.dropped_dirs:
            writes += self._delete_subtree(row[0], None, state, record=False)
        # Subdirectories: new ones get an id now, vanished ones are pruned with their subtree.
        children = []
        for name, row in diff.subdirs:
            if row is None:
                cursor = conn.execute("INSERT INTO dirs (parent, name) VALUES (?, ?)", (dir_id, name))
                children.append((cursor.lastrowid, name, 0, False))
                writes += 1
            else:
                children.append((row[0], name, row[1], True))
        for name, row in diff.vanished_dirs:
            writes += self._delete_subtree(row[0], rel + "/" + name if rel else name, state, record=True)
        if diff.is_leaf != diff.leaf:
            conn.execute("UPDATE dirs SET leaf = ? WHERE id = ?", (diff.is_leaf, dir_id))
            writes += 1
        if writes:
            state["report"].index_changed = True
            self._pending_writes += writes
        return children

    def _hash(self, dir_fd, name, rel, report):
        """The digest with compare=hash (None otherwise); False when the file cannot be read."""
        if not self.digest_size:
            return None
        try:
            return file_digest(dir_fd, name, self.hash_algorithm)
        except OSError as exc:
            report.unreadable.add(rel + "/" + name if rel else name, exc.strerror)
            return False

    def _apply(self, dir_id, dir_fd, rel, packed, added, changed, vanished, dropped, state):
        """Write one directory's diff: changed files get their new state, new ones are added,
        vanished ones pruned (queued for deletion on the destinations when asked)."""
        report = state["report"]
        conn = self.conn
        compare = self.compare
        names, sts = packed.names, packed.sts
        updates = {}
        for position, size, mtime_ns, ctime_ns in changed:
            name = names[position]
            digest = self._hash(dir_fd, name, rel, report)
            if digest is False:
                continue
            current = (size, mtime_ns, digest)
            previous = (packed.sizes[position], packed.mtimes[position], packed.digest(position))
            base, retry = sts[position] & 3, sts[position] & RETRY
            if base == SYNCED:
                sent = previous
            elif base == CHANGED:
                sent = self.sent_version(dir_id, name)
            else:
                sent = None
            if sent is not None and same_version(compare, current, sent):
                st = SYNCED
                if base == CHANGED:
                    conn.execute("DELETE FROM sent WHERE dir = ? AND name = ?", (dir_id, name))
            elif sent is None:
                st = NEW | retry
            else:
                st = CHANGED | retry
                if base == SYNCED:
                    conn.execute("INSERT INTO sent (dir, name, size, mtime_ns, hash) VALUES (?, ?, ?, ?, ?) "
                                 "ON CONFLICT (dir, name) DO UPDATE SET size = excluded.size, "
                                 "mtime_ns = excluded.mtime_ns, hash = excluded.hash", (dir_id, name) + sent)
                    state["has_side"] = True
            if st != SYNCED and not same_version(compare, current, previous):
                report.modified.add(rel + "/" + name if rel else name)
            if state["has_failures"]:
                # A new version starts its failure count over.
                conn.execute("DELETE FROM failures WHERE dir = ? AND name = ?", (dir_id, name))
            updates[position] = (size, mtime_ns, st, digest, settled_ctime(ctime_ns))
        removed = set(vanished.values())
        removed.update(dropped)
        if not added and not removed and not self.digest_size and updates and max(
                update[0] for update in updates.values()) < 1 << (8 * packed.sizes.itemsize - 1):
            # Only existing files changed: patch the arrays, keep the compressed names as they are.
            for position, (size, mtime_ns, st, _digest, _ctime) in updates.items():
                packed.sizes[position] = size
                packed.mtimes[position] = mtime_ns
                sts[position] = st
            conn.execute("UPDATE dirs SET sts = ?, sizes = ?, mtimes = ?, pending = ? WHERE id = ?",
                         (bytes(sts), packed.sizes.tobytes(), packed.mtimes.tobytes(), packed.pending(), dir_id))
            return len(updates)
        entries = [(name,) + updates[i] if i in updates else
                   (name, packed.sizes[i], packed.mtimes[i], sts[i], packed.digest(i), packed.ctime(i))
                   for i, name in enumerate(names) if i not in removed]
        returned = set()
        if added and state["has_gone"]:
            # A path that comes back before its delete was submitted is not deleted; the destination
            # may hold the older file with a newer mtime, so it is sent with sync_level=checksum.
            for start in range(0, len(added), QUERY_CHUNK):
                chunk = [rel + "/" + name if rel else name for name, _size, _mtime, _ctime in added[start:start + QUERY_CHUNK]]
                returned.update(row[0] for row in conn.execute(
                    "SELECT path FROM gone WHERE sub IS NULL AND path IN (%s)" % ",".join("?" * len(chunk)), chunk))
            conn.executemany("DELETE FROM gone WHERE path = ? AND sub IS NULL", [(p,) for p in returned])
        for name, size, mtime_ns, ctime_ns in added:
            digest = self._hash(dir_fd, name, rel, report)
            if digest is False:
                continue
            path = rel + "/" + name if rel else name
            entries.append((name, size, mtime_ns, NEW | RETRY if path in returned else state["new_state"], digest,
                            settled_ctime(ctime_ns)))
            report.new.add(path)
        self.store(dir_id, entries)
        if removed:
            for name, position in vanished.items():
                path = rel + "/" + name if rel else name
                report.deleted.add(path)
                if state["gone_dests"]:
                    holds = self._open_transfers([dir_id], name) if state["has_inflight"] else {}
                    if sts[position] & 3 != NEW or holds or (state["has_side"] and self._delivered([dir_id], name)):
                        self._queue_delete(path, state["gone_dests"], holds)
            keys = [(dir_id, names[position]) for position in removed]
            tables = (("sent", "delivered") if state["has_side"] else ()) + (
                ("failures",) if state["has_failures"] else ())
            for table in tables:
                conn.executemany("DELETE FROM %s WHERE dir = ? AND name = ?" % table, keys)
        return len(updates) + len(added) + len(removed)

    def _delete_subtree(self, dir_id, rel, state, record):
        """Prune a directory that vanished (or is now excluded) with everything below it."""
        report = state["report"]
        ids = self.subtree(dir_id)
        count = 0
        # A directory that vanished is deleted on every destination: one added since it was sent
        # there may hold it, or an empty directory created there; a task still writing below it
        # finishes first.
        holds = self._open_transfers(ids) if record and state["gone_dests"] and state["has_inflight"] else {}
        for start in range(0, len(ids), QUERY_CHUNK):
            chunk = ids[start:start + QUERY_CHUNK]
            marks = ",".join("?" * len(chunk))
            if record:
                for sub_id, sts in self.conn.execute("SELECT id, sts FROM dirs WHERE id IN (%s)" % marks, chunk):
                    if not sts:
                        continue
                    report.deleted.count += len(sts)
                    if len(report.deleted.paths) < report.deleted.limit:
                        for name in self.load(sub_id).names:
                            report.deleted.paths.append(shown_name(self.file_path(sub_id, name)))
                            if len(report.deleted.paths) >= report.deleted.limit:
                                break
            count += self.conn.execute("SELECT COALESCE(SUM(length(sts)), 0) FROM dirs WHERE id IN (%s)" % marks,
                                       chunk).fetchone()[0]
            tables = (("sent", "delivered") if state["has_side"] else ()) + (
                ("failures",) if state["has_failures"] else ())
            for table in tables:
                self.conn.execute("DELETE FROM %s WHERE dir IN (%s)" % (table, marks), chunk)
            self.conn.execute("DELETE FROM dirs WHERE id IN (%s)" % marks, chunk)
        if record and state["gone_dests"]:
            self._queue_delete(rel + "/", state["gone_dests"], holds)
        for removed_id in ids:
            self._dir_paths.pop(removed_id, None)
        return count + len(ids)

    def _open_transfers(self, dir_ids, name=None):
        """{destination: newest open transfer task carrying a file of ``dir_ids`` (or the file ``name``)}."""
        holds = {}
        for start in range(0, len(dir_ids), QUERY_CHUNK):
            chunk = dir_ids[start:start + QUERY_CHUNK]
            where = "i.dir IN (%s)" % ",".join("?" * len(chunk)) + (" AND i.name = ?" if name is not None else "")
            for dest, sub in self.conn.execute(
                    "SELECT s.dest, max(s.id) FROM inflight AS i JOIN subs AS s ON s.id = i.sub WHERE %s "
                    "GROUP BY s.dest" % where, chunk + ([name] if name is not None else [])):
                holds[dest] = max(sub, holds.get(dest, 0))
        return holds

    def _delivered(self, dir_ids, name=None):
        """Whether a version of a file of ``dir_ids`` (or of the file ``name``) reached some destination."""
        for start in range(0, len(dir_ids), QUERY_CHUNK):
            chunk = dir_ids[start:start + QUERY_CHUNK]
            where = "dir IN (%s)" % ",".join("?" * len(chunk)) + (" AND name = ?" if name is not None else "")
            if self.conn.execute("SELECT 1 FROM delivered WHERE %s LIMIT 1" % where,
                                 chunk + ([name] if name is not None else [])).fetchone():
                return True
        return False

    def _queue_delete(self, path, dest_ids, holds):
        """Queue the delete of ``path`` on each destination, after the transfer that may still write it there."""
        self.conn.executemany(
            "INSERT INTO gone (path, dest, hold) VALUES (?, ?, ?) ON CONFLICT (path, dest) DO UPDATE SET "
            "hold = excluded.hold WHERE excluded.hold IS NOT NULL",
            [(path, dest, holds.get(dest)) for dest in dest_ids])

    # -- set_time ---------------------------------------------------------------------------
    def mark(self, as_of_ns, subpath=None, root=None):
        """S1's set_time: what was modified at or before ``as_of_ns`` counts as transferred, the
        rest as never sent, for the whole tree or the subtree (or file) at ``subpath``.
        Returns (files now counted as transferred, files now to send, whether anything changed)."""
        target = self.lookup(subpath or "")
        if target is None:
            raise ConfigError("subpath %s is not in the index of src_dir (does it exist, is it excluded?)" % subpath)
        dir_id, only = target
        transferred = later = changed = 0
        with self.transaction():
            ids = [dir_id] if only is not None else self.subtree(dir_id)
            for current in ids:
                packed = self.load(current)
                if not packed.names:
                    continue
                before = bytes(packed.sts)
                for position, name in enumerate(packed.names):
                    if only is not None and name != only:
                        continue
                    if packed.mtimes[position] <= as_of_ns:
                        packed.sts[position] = SYNCED
                        transferred += 1
                    else:
                        # A forced resend: compared by checksum, so a corrupt replica is repaired.
                        packed.sts[position] = NEW | RETRY
                        later += 1
                if bytes(packed.sts) != before:
                    changed += 1
                    self.store_states(current, packed)
            for start in range(0, len(ids), QUERY_CHUNK):
                chunk = ids[start:start + QUERY_CHUNK]
                where = "dir IN (%s)" % ",".join("?" * len(chunk)) + (" AND name = ?" if only is not None else "")
                params = chunk + ([only] if only is not None else [])
                for table in ("sent", "delivered", "failures"):
                    changed += self.conn.execute("DELETE FROM %s WHERE %s" % (table, where), params).rowcount
            if only is None:
                for start in range(0, len(ids), QUERY_CHUNK):
                    chunk = ids[start:start + QUERY_CHUNK]
                    for leaf_id, in self.conn.execute("SELECT id FROM dirs WHERE leaf = 1 AND id IN (%s)"
                                                      % ",".join("?" * len(chunk)), chunk).fetchall():
                        rel = self.dir_path(leaf_id)
                        try:
                            mtime_ns = os.stat(os.path.join(root, rel) if rel else root,
                                               follow_symlinks=False).st_mtime_ns
                        except OSError:
                            continue
                        flag = 1 if mtime_ns <= as_of_ns else 0
                        changed += self.conn.execute("UPDATE dirs SET sent = ? WHERE id = ? AND sent != ?",
                                                     (flag, leaf_id, flag)).rowcount
            self.set_meta("marked_as_of", as_of_ns / 1e9)
            self.set_meta("marked_subpath", subpath or "")
            self.set_meta("marked_at", time.time())
        return transferred, later, bool(changed)

    # -- submissions ------------------------------------------------------------------------
    def candidates(self, dest_id, limit, now=None):
        """Files the destination still needs, not carried by an open task to it, not quarantined nor
        waiting for their retry time: up to ``limit``. Each is a dict with dir, name, path, size,
        mtime_ns, hash, st, sent (a version or None) and batch (the size of its next task, or None)."""
        now = time.time() if now is None else now
        result = []
        deleting = self.deleting(dest_id)
        has_failures = self.conn.execute("SELECT 1 FROM failures LIMIT 1").fetchone() is not None
        for dir_id, in self.conn.execute(
                "SELECT id FROM dirs INDEXED BY dirs_pending WHERE pending > 0 ORDER BY id").fetchall():
            rel = self.dir_path(dir_id)
            if rel is None or (deleting and rel and under_delete(deleting, rel)):
                continue
            packed = self.load(dir_id)
            busy = set(row[0] for row in self.conn.execute(
                "SELECT i.name FROM inflight AS i JOIN subs AS s ON s.id = i.sub WHERE i.dir = ? AND s.dest = ?",
                (dir_id, dest_id)))
            held = dict((row[0], (row[1], row[2], row[3])) for row in self.conn.execute(
                "SELECT name, size, mtime_ns, hash FROM delivered WHERE dir = ? AND dest = ?", (dir_id, dest_id)))
            failed = dict((row[0], row[1:]) for row in self.conn.execute(
                "SELECT name, alone, batch, next_at FROM failures WHERE dir = ?", (dir_id,))) if has_failures else {}
            for position, name in enumerate(packed.names):
                st = packed.sts[position]
                if st == SYNCED or name in busy:
                    continue
                if deleting and under_delete(deleting, rel + "/" + name if rel else name):
                    continue
                size, mtime_ns = packed.sizes[position], packed.mtimes[position]
                there = held.get(name)
                if there is not None and there[:2] == (size, mtime_ns):
                    continue
                failure = failed.get(name)
                if failure is not None and (failure[0] >= self.max_file_failures or failure[2] > now):
                    continue
                if there is None and st & 3 == CHANGED:
                    there = self.sent_version(dir_id, name)
                # ``sent``: the older version the destination holds, if any (it decides the sync level).
                result.append(dict(dir=dir_id, name=name, path=rel + "/" + name if rel else name, size=size,
                                   mtime_ns=mtime_ns, hash=packed.digest(position), st=st, sent=there,
                                   batch=None if failure is None else failure[1]))
                if len(result) >= limit:
                    return result
        return result

    def record_submission(self, submission_id, dest_id, kind, files=(), gone=()):
        """Tie the file versions (or gone paths) a task carries to its submission, committed."""
        with self.transaction():
            cursor = self.conn.execute("INSERT INTO subs (submission_id, dest, kind, created_at) VALUES (?, ?, ?, ?)",
                                       (submission_id, dest_id, kind, time.time()))
            sub = cursor.lastrowid
            self.conn.executemany("INSERT INTO inflight (dir, name, sub, size, mtime_ns, hash) VALUES (?, ?, ?, ?, ?, ?)",
                                  [(f["dir"], f["name"], sub, f["size"], f["mtime_ns"], f["hash"]) for f in files])
            self.conn.executemany("UPDATE gone SET sub = ? WHERE path = ? AND dest = ?",
                                  [(sub, path, dest_id) for path in gone])
        return sub

    def open_submissions(self):
        return [dict(id=r[0], submission_id=r[1], dest=r[2], kind=r[3]) for r in self.conn.execute(
            "SELECT id, submission_id, dest, kind FROM subs ORDER BY id")]

    def open_tasks_per_dest(self):
        return dict(self.conn.execute("SELECT dest, count(*) FROM subs GROUP BY dest").fetchall())

    def settle(self, sub, status, dest_ids, skipped=None, reason=None, now=None):
        """Apply a finished task: SUCCEEDED marks exactly the versions it carried as transferred
        to its destination (and everywhere once every destination has them), FAILED leaves them
        pending with RETRY set and counts a failure for each (``reason``: the task's error).
        ``skipped`` ({relative path: reason}, source errors Globus skipped) stay pending too, with
        a failure counted against them alone. Returns the number of files the task confirmed on its
        destination (whether or not every other destination holds them yet), or to retry."""
        conn = self.conn
        now = time.time() if now is None else now
        skipped = skipped or {}
        count = 0
        with self.transaction():
            if sub["kind"] == "delete":
                if status == "SUCCEEDED":
                    count = conn.execute("DELETE FROM gone WHERE sub = ?", (sub["id"],)).rowcount
                elif status == "FAILED":
                    count = conn.execute("UPDATE gone SET sub = NULL WHERE sub = ?", (sub["id"],)).rowcount
            elif status in ("SUCCEEDED", "FAILED"):
                others = [d for d in dest_ids if d != sub["dest"]]
                active = sub["dest"] in dest_ids
                rows = conn.execute("SELECT dir, name, size, mtime_ns, hash FROM inflight WHERE sub = ? ORDER BY dir",
                                    (sub["id"],)).fetchall()
                failures = []
                start = 0
                while start < len(rows):
                    dir_id = rows[start][0]
                    end = start
                    while end < len(rows) and rows[end][0] == dir_id:
                        end += 1
                    packed = self.load(dir_id)
                    positions = dict(zip(packed.names, range(len(packed.names))))
                    touched = False
                    for _dir, name, size, mtime_ns, digest in rows[start:end]:
                        position = positions.get(name)
                        if position is None or packed.sts[position] == SYNCED:
                            continue
                        why = skipped.get(self.file_path(dir_id, name)) if skipped else None
                        if status == "FAILED" or why is not None:
                            packed.sts[position] |= RETRY
                            touched = True
                            if status == "FAILED":
                                count += 1
                            failures.append((dir_id, name, why or reason, why is not None or len(rows) == 1))
                        elif active:
                            if self._deliver(packed, position, dir_id, name, sub["dest"], (size, mtime_ns, digest),
                                             others):
                                touched = True
                            count += 1
                            conn.execute("DELETE FROM failures WHERE dir = ? AND name = ?", (dir_id, name))
                    if touched:
                        self.store_states(dir_id, packed)
                    start = end
                self._count_failures(failures, len(rows), now)
            conn.execute("DELETE FROM inflight WHERE sub = ?", (sub["id"],))
            conn.execute("DELETE FROM subs WHERE id = ?", (sub["id"],))
        return count

    def _count_failures(self, failures, task_size, now):
        """One more failure for each (dir, name, reason, alone). The first is taken for a passing
        fault: the task's files go out again at once, as they were. A file failing again goes out in
        tasks half as large, and one failing on its own waits, with exponential backoff."""
        rows = []
        for dir_id, name, reason, alone in failures:
            before = self.conn.execute("SELECT attempts, alone FROM failures WHERE dir = ? AND name = ?",
                                       (dir_id, name)).fetchone() or (0, 0)
            times = before[1] + int(alone)
            wait = min(FILE_RETRY_BACKOFF_MAX, self.file_retry_backoff * 2 ** (times - 2)) if times > 1 else 0
            batch = task_size if not before[0] else max(1, task_size // 2)
            rows.append((dir_id, name, int(alone), batch, now + wait, reason))
        self.conn.executemany(
            "INSERT INTO failures (dir, name, attempts, alone, batch, next_at, reason) VALUES (?, ?, 1, ?, ?, ?, ?) "
            "ON CONFLICT (dir, name) DO UPDATE SET attempts = attempts + 1, alone = alone + excluded.alone, "
            "batch = min(batch, excluded.batch), next_at = excluded.next_at, reason = excluded.reason", rows)

    def quarantine(self, files, reason):
        """Files no task can carry (``reason``): quarantined at once, reported with the others."""
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO failures (dir, name, attempts, alone, batch, next_at, reason) VALUES (?, ?, 0, ?, 1, 0, ?) "
                "ON CONFLICT (dir, name) DO UPDATE SET alone = excluded.alone, reason = excluded.reason",
                [(f["dir"], f["name"], self.max_file_failures, reason) for f in files])

    def quarantined(self, limit):
        """(count, up to ``limit`` dicts of path, attempts, reason) of the files no longer sent."""
        count = self.conn.execute("SELECT count(*) FROM failures WHERE alone >= ?",
                                  (self.max_file_failures,)).fetchone()[0]
        sample = []
        for dir_id, name, attempts, reason in self.conn.execute(
                "SELECT dir, name, attempts, reason FROM failures WHERE alone >= ? ORDER BY dir, name LIMIT ?",
                (self.max_file_failures, int(limit))):
            path = self.file_path(dir_id, name)
            if path is not None:
                sample.append(dict(path=shown_name(path), attempts=attempts, reason=reason))
        return count, sample

    def _deliver(self, packed, position, dir_id, name, dest_id, version, others):
        conn = self.conn
        if others:
            held = conn.execute("SELECT count(*) FROM delivered WHERE dir = ? AND name = ? AND size = ? AND mtime_ns = ? "
                                "AND dest IN (%s)" % ",".join("?" * len(others)),
                                (dir_id, name, version[0], version[1]) + tuple(others)).fetchone()[0]
            if held < len(others):
                conn.execute("INSERT INTO delivered (dir, name, dest, size, mtime_ns, hash) VALUES (?, ?, ?, ?, ?, ?) "
                             "ON CONFLICT (dir, name, dest) DO UPDATE SET size = excluded.size, "
                             "mtime_ns = excluded.mtime_ns, hash = excluded.hash",
                             (dir_id, name, dest_id) + tuple(version))
                return False
            conn.execute("DELETE FROM delivered WHERE dir = ? AND name = ?", (dir_id, name))
        current = (packed.sizes[position], packed.mtimes[position], packed.digest(position))
        if same_version(self.compare, current, version):
            packed.sts[position] = SYNCED
            conn.execute("DELETE FROM sent WHERE dir = ? AND name = ?", (dir_id, name))
        else:
            packed.sts[position] = CHANGED
            conn.execute("INSERT INTO sent (dir, name, size, mtime_ns, hash) VALUES (?, ?, ?, ?, ?) "
                         "ON CONFLICT (dir, name) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
                         "hash = excluded.hash", (dir_id, name) + tuple(version))
        return True

    def drop_submission(self, sub):
        """A submission the state database never recorded was never POSTed: forget it."""
        with self.transaction():
            self.conn.execute("DELETE FROM inflight WHERE sub = ?", (sub["id"],))
            self.conn.execute("UPDATE gone SET sub = NULL WHERE sub = ?", (sub["id"],))
            self.conn.execute("DELETE FROM subs WHERE id = ?", (sub["id"],))

    # -- empty directories and deletes ------------------------------------------------------
    def unsent_empty_dirs(self):
        return [(row[0], self.dir_path(row[0])) for row in self.conn.execute(
            "SELECT id FROM dirs INDEXED BY dirs_unsent_leaves WHERE leaf = 1 AND sent = 0 ORDER BY id").fetchall()]

    def mark_dir_sent(self, dir_id):
        with self.transaction():
            self.conn.execute("UPDATE dirs SET sent = 1 WHERE id = ?", (dir_id,))

    def gone_paths(self, dest_id, limit):
        """Paths to delete on the destination now: not in a delete task yet, no transfer still writing them."""
        return [row[0] for row in self.conn.execute(
            "SELECT path FROM gone WHERE dest = ? AND sub IS NULL AND (hold IS NULL OR hold NOT IN (SELECT id FROM subs)) "
            "ORDER BY path LIMIT ?", (dest_id, int(limit)))]

    def forget_gone(self, dest_id, paths):
        """Drop queued deletes that must never be sent."""
        with self.transaction():
            self.conn.executemany("DELETE FROM gone WHERE dest = ? AND path = ?", [(dest_id, p) for p in paths])

    def deleting(self, dest_id):
        """Paths the destination must delete first (queued or in a running delete task): nothing at
        or below them is sent or created there until that delete has finished."""
        return set(row[0] for row in self.conn.execute("SELECT path FROM gone WHERE dest = ?", (dest_id,)))


# -- check mode: the same statements on a throwaway copy -----------------------------------------
@contextlib.contextmanager
def opened_index(path, compare, hash_algorithm, check_mode):
    """The job's index; in check mode a temporary copy of it (or a new empty one), so a planning
    run executes exactly what a real run would and the index file is never created or touched."""
    if not check_mode:
        index = PathIndex(path, compare, hash_algorithm).open()
        try:
            yield index
        finally:
            index.close()
        return
    workdir = tempfile.mkdtemp(prefix="dir_trie_sync-check-")
    try:
        copy = os.path.join(workdir, os.path.basename(path))
        for source in index_files(path):
            if os.path.exists(source):
                shutil.copyfile(source, copy + source[len(path):])
        index = PathIndex(copy, compare, hash_algorithm).open()
        try:
            yield index
        finally:
            index.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def remove_index(path):
    """state=reset: delete the index file and its side files; returns whether one existed."""
    existed = False
    for name in index_files(path):
        if os.path.exists(name):
            existed = True
            os.unlink(name)
    return existed


# -- preflight ---------------------------------------------------------------------------------
def local_preflight(src_dir, index_file):
    """S1's test_config, local part: a readable src_dir and a writable place for the index."""
    reasons = []
    if not os.path.isdir(src_dir):
        reasons.append("src_dir %s is not a directory" % src_dir)
    elif not os.access(src_dir, os.R_OK | os.X_OK):
        reasons.append("src_dir %s is not readable" % src_dir)
    if os.path.exists(index_file):
        if not os.access(index_file, os.R_OK | os.W_OK):
            reasons.append("the index %s is not writable" % index_file)
    else:
        parent = os.path.dirname(index_file)
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not parent or not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            reasons.append("the index cannot be created in %s" % os.path.dirname(index_file))
    if reasons:
        raise ConfigError("preflight failed, nothing was changed: " + "; ".join(reasons), preflight=reasons)


def globus_preflight(client, source_collection, source_path, destinations):
    """Both ends ready (globus_collection_info's logic): the source path listable, every
    destination collection usable. Raises GlobusError listing the reasons."""
    report = [collection_readiness(client, source_collection, [source_path])]
    seen = set([source_collection])
    for destination in destinations:
        if destination["collection"] not in seen:
            seen.add(destination["collection"])
            report.append(collection_readiness(client, destination["collection"], []))
    reasons = [reason for entry in report for reason in entry["reasons"]]
    if reasons:
        raise GlobusError("preflight failed, nothing was changed: " + "; ".join(reasons), preflight=report)
    return report


# -- one run ---------------------------------------------------------------------------------------
class DirTrieSync(object):
    """One run of a job: settle, scan + diff, empty directories, submit, deletes, report.

    ``config`` holds the module's options (job, src_dir, source_collection, source_path,
    destinations, include, exclude, items_per_task, max_submissions_per_run, max_active_tasks,
    identity_max_open_tasks, label, sample_size, delete_destination and the TransferData ``options``).
    """

    def __init__(self, index, config, db, client, check_mode=False, warn=None):
        self.index = index
        self.config = config
        self.db = db
        self.client = client
        self.check_mode = check_mode
        self.warn = warn or (lambda message: None)
        self.job = config["job"]
        index.max_file_failures = config.get("max_file_failures", MAX_FILE_FAILURES)
        index.file_retry_backoff = config.get("file_retry_backoff", FILE_RETRY_BACKOFF)
        self.dest_ids = []
        self.destinations = {}
        self._fake = 0
        # Why this run stopped submitting, once the identity's task budget has no room left.
        self.budget_wait = None

    def run(self):
        config, index = self.config, self.index
        now = time.time()
        if index.meta("src_dir") is None and self.db.query_one(
                "SELECT 1 AS known FROM sync_jobs WHERE name = ?", (self.job,)):
            # A new index for a job that ran before (state=reset, or a lost index): destinations may
            # hold any version, so the first scan's files go with sync_level=checksum.
            with index.transaction():
                index.set_meta("resend_by_checksum", 1)
        index.bind(self.job, config["src_dir"])
        for note in index.notes:
            self.warn(note)
        self.dest_ids, added = index.set_destinations(config["destinations"])
        self.destinations = dict(zip(self.dest_ids, config["destinations"]))
        if added:
            self.warn("%d destinations were added: every file is sent to them, not again to the others"
                      % len(added))
        if self.check_mode:
            # The state database's check-mode transaction holds a write lock from its first write
            # until the run ends: scan first, so no real run waits for the scan of a plan.
            resubmitted = [dict(submission_id=s) for s in unconfirmed_submissions(self.db, self.job)]
            scan = self.scan()
            refresh_tasks(self.db, self.client, open_task_ids(self.db, jobs=[self.job]))
            settled = self.settle()
        else:
            resubmitted = resubmit_unconfirmed(self.db, self.client, self.job, on_rejected=settled_by_the_index)
            refresh_tasks(self.db, self.client, open_task_ids(self.db, jobs=[self.job]))
            settled = self.settle()
            scan = self.scan()
        counts, samples = scan.as_dict()
        if not self.check_mode:
            index.compact()  # free pages only: not a change anyone asked for
        directories = self.make_dirs()
        tasks, reason = self.submit()
        deletes = self.submit_deletes() if config["delete_destination"] else []
        if self.budget_wait:
            reason = self.budget_wait
        state = index.counts()
        for kind, warning in (("symlinks", "are symbolic links: not followed, not sent"),
                              ("special", "are not regular files (FIFOs, sockets, devices): not sent"),
                              ("skipped", "have names that are not valid UTF-8, which Globus paths cannot express: "
                                          "skipped"),
                              ("unreadable", "could not be read: their index entries are kept as they were")):
            if counts[kind]:
                self.warn("%d paths %s: %s" % (counts[kind], warning, ", ".join(samples[kind])))
        quarantined, failed_files = index.quarantined(config["sample_size"])
        if quarantined:
            self.warn("%d files are quarantined (failed %d times in a task of their own, or cannot be addressed) and "
                      "are no longer sent until they change (or state=marked with an earlier as_of resets them): %s" % (
                          quarantined, index.max_file_failures,
                          "; ".join("%s (%s)" % (f["path"], f["reason"]) for f in failed_files)))
        changed = bool(scan.index_changed or tasks or deletes or directories["created"]
                       or (resubmitted and not self.check_mode))
        result = dict(
            changed=changed, job=self.job, index=self.index_report(),
            counts=dict(counts, empty_dirs=directories["pending"]), samples=dict(samples,
                                                                                 empty_dirs=directories["sample"]),
            scan_seconds=round(scan.seconds, 3), scan_workers=scan.workers, settled=settled,
            resubmitted=resubmitted, tasks=tasks, reason=reason, waiting_for_budget=bool(self.budget_wait),
            task_budget=dict(open_tasks=identity_open_tasks(self.db), limit=config["identity_max_open_tasks"]),
            directories_created=directories["created"],
            directory_errors=directories["errors"],
            deletes=deletes, pending=state["pending"], in_flight=state["in_flight"], open_tasks=state["open_tasks"],
            deletes_pending=state["deletes_pending"], quarantined=dict(count=quarantined, files=failed_files),
        )
        self.record_job(now, scan, result)
        return result

    def scan(self):
        config = self.config
        return self.index.scan(config["src_dir"], include=config["include"], exclude=config["exclude"],
                               sample_size=config["sample_size"],
                               gone_dests=self.dest_ids if config["delete_destination"] else (),
                               skip_rel=config.get("skip_rel", ()), workers=config.get("scan_workers", 1))

    def index_report(self):
        path = self.config["index_path"]
        size = os.path.getsize(path) if os.path.exists(path) else 0
        return dict(path=path, size_bytes=size, files=self.index.total_files())

    # -- 1. settle ----------------------------------------------------------------------------
    def settle(self):
        summary = dict(succeeded=0, failed=0, files_transferred=0, files_to_retry=0, forgotten=0)
        by_destination = collections.OrderedDict((dest_id, 0) for dest_id in self.dest_ids)
        subs = self.index.open_submissions()
        rows = {}
        ids = [s["submission_id"] for s in subs]
        for start in range(0, len(ids), QUERY_CHUNK):
            chunk = ids[start:start + QUERY_CHUNK]
            for row in self.db.query("SELECT submission_id, task_id, status, nice_status, fatal_error, request "
                                     "FROM globus_tasks WHERE "
                                     "submission_id IN (%s)" % ", ".join("?" * len(chunk)), chunk):
                rows[row["submission_id"]] = row
        for sub in subs:
            row = rows.get(sub["submission_id"])
            if row is None:
                # Killed after the index committed but before the state database did: never POSTed.
                self.index.drop_submission(sub)
                summary["forgotten"] += 1
                continue
            if row["status"] not in SETTLED_TASK_STATUSES:
                continue
            status = "SUCCEEDED" if row["status"] == "SUCCEEDED" else "FAILED"
            skipped = None
            if row["status"] == "SUCCEEDED" and sub["kind"] == "transfer" and row["task_id"]:
                skipped = self.skipped_paths(row)
            count = self.index.settle(sub, status, self.dest_ids, skipped, reason=failure_reason(row))
            if status == "SUCCEEDED":
                summary["succeeded"] += 1
                if sub["kind"] == "transfer" and sub["dest"] in by_destination:
                    summary["files_transferred"] += count
                    by_destination[sub["dest"]] += count
            else:
                summary["failed"] += 1
                summary["files_to_retry"] += count if sub["kind"] == "transfer" else 0
        summary["destinations"] = [dict(destination_collection=self.destinations[dest_id]["collection"],
                                        destination_path=self.destinations[dest_id]["path"], files_transferred=files)
                                   for dest_id, files in by_destination.items()]
        return summary

    def skipped_paths(self, row):
        """Source files Globus skipped (skip_source_errors): {relative path: reason}; they stay pending."""
        request = json.loads(row["request"])
        if not request.get("skip_source_errors"):
            return None
        prefix = self.config["source_path"]
        paths = {}
        for record in task_files(self.client, row["task_id"], "skipped_errors"):
            source = record.get("source_path") or ""
            rel = posixpath.relpath(source, prefix) if prefix not in ("", "/") else source.lstrip("/")
            paths[rel] = "skipped: %s %s" % (record.get("error_code") or "", record.get("error_details") or "")
        return paths

    # -- 3. empty directories -----------------------------------------------------------------
    def make_dirs(self):
        report = dict(created=0, pending=0, sample=[], errors=[])
        created = dict((dest_id, set()) for dest_id in self.dest_ids)
        deleting = dict((dest_id, self.index.deleting(dest_id)) for dest_id in self.dest_ids)
        limit = self.config["sample_size"]
        for dir_id, rel in self.index.unsent_empty_dirs():
            if rel is None:
                continue
            if self.check_mode:
                report["pending"] += 1
                if len(report["sample"]) < limit:
                    report["sample"].append(shown_name(rel or "."))
                continue
            done = True
            for dest_id in self.dest_ids:
                if rel and deleting[dest_id] and under_delete(deleting[dest_id], rel):
                    done = False  # created once the delete of what was there before has finished
                    continue
                error = self._mkdir(dest_id, rel, created[dest_id])
                if error:
                    done = False
                    if len(report["errors"]) < limit:
                        report["errors"].append(error)
            if done:
                self.index.mark_dir_sent(dir_id)
                report["created"] += 1
                if len(report["sample"]) < limit:
                    report["sample"].append(shown_name(rel or "."))
            else:
                report["pending"] += 1
        return report

    def _mkdir(self, dest_id, rel, created):
        """operation_mkdir on one destination, creating missing parents first; None when done."""
        destination = self.destinations[dest_id]
        path = join_path(destination["path"], rel) if rel else destination["path"]
        outcome = self._mkdir_one(destination["collection"], path, created)
        if outcome == "missing-parent":
            parents = []
            parent = posixpath.dirname(path.rstrip("/"))
            while parent and parent != "/" and parent not in created:
                parents.append(parent)
                parent = posixpath.dirname(parent)
            for parent in reversed(parents):
                outcome = self._mkdir_one(destination["collection"], parent, created)
                if outcome not in (None, "exists"):
                    break
            outcome = self._mkdir_one(destination["collection"], path, created)
        if outcome in (None, "exists"):
            return None
        return "%s on %s: %s" % (shown_name(path), destination["collection"], outcome)

    def _mkdir_one(self, collection, path, created):
        if path in created:
            return "exists"
        try:
            with api_errors("create directory %s" % shown_name(path), collection=collection):
                self.client.operation_mkdir(collection, path)
        except GlobusError as exc:
            code = exc.details.get("code") or ""
            if "Exists" in code:
                created.add(path)
                return "exists"
            if "NotFound" in code:
                return "missing-parent"
            return exc.msg
        created.add(path)
        return None

    # -- 4. submit ----------------------------------------------------------------------------
    def submit(self):
        config = self.config
        open_tasks, paused = route_task_state(self.db, self.job)
        if paused:
            return [], "a task of this job is paused: nothing new is submitted until it resumes"
        per_dest = self.index.open_tasks_per_dest()
        slots = dict((d, max(config["max_active_tasks"] - per_dest.get(d, 0), 0)) for d in self.dest_ids)
        budget = config["max_submissions_per_run"]
        tasks = []
        active = list(self.dest_ids)
        while budget > 0 and active and not self.budget_wait:
            for dest_id in list(active):
                if budget <= 0 or self.budget_wait:
                    break
                if slots[dest_id] <= 0:
                    active.remove(dest_id)
                    continue
                files = self.index.candidates(dest_id, config["items_per_task"])
                home_relative = [f for f in files if self.read_as_home(dest_id, f["path"])]
                if home_relative:
                    self.index.quarantine(home_relative, HOME_RELATIVE)
                    continue  # the next pass takes the candidates that are left
                if not files:
                    active.remove(dest_id)
                    continue
                for group, retry in task_groups(files, self.needs_checksum):
                    if budget <= 0 or slots[dest_id] <= 0:
                        break
                    report = self.submit_batch(dest_id, group, retry)
                    if report is None:
                        break  # no task budget left: the files stay pending
                    tasks.append(report)
                    budget -= 1
                    slots[dest_id] -= 1
        return tasks, None if tasks else self.idle_reason(slots)

    def read_as_home(self, dest_id, rel):
        """Whether Globus would read this file's path as one in the user's home directory: a top
        level ``~`` under a source or destination path of ``/`` becomes ``/~/...``."""
        if rel.split("/", 1)[0] != "~":
            return False
        return "/" in (join_path(self.config["source_path"], ""), join_path(self.destinations[dest_id]["path"], ""))

    def idle_reason(self, slots):
        """Why a run submitted nothing, as the index says it."""
        counts = self.index.counts()
        if not counts["pending"]:
            return "nothing to send"
        if any(slots[d] <= 0 for d in self.dest_ids):
            return "waiting for open tasks (max_active_tasks=%d per destination)" % self.config["max_active_tasks"]
        if counts["in_flight"]:
            return "the pending files are in open tasks"
        if counts["deletes_pending"]:
            return "the pending files wait for deletes on the destination to finish"
        if self.index.conn.execute("SELECT 1 FROM failures LIMIT 1").fetchone():
            return "the pending files are quarantined or wait for their retry time after failures"
        return "no pending file can be sent"

    def needs_checksum(self, entry):
        """Send with sync_level=checksum when Globus's own test would skip a real change: after a
        failed attempt (a partial file may sit at the destination), or when the change is not
        visible to the chosen sync_level (an mtime not newer in whole seconds, an equal size)."""
        if entry["st"] & RETRY:
            return True
        sent = entry["sent"]
        if sent is None:
            return False
        level = self.config["options"]["sync_level"]
        if level == "mtime":
            return entry["mtime_ns"] // 10 ** 9 <= sent[1] // 10 ** 9
        if level == "size":
            return entry["size"] == sent[0]
        return False

    def room_for_task(self):
        """Whether the identity's task budget (shared with every job and route on the state
        database) has room for one more task; if not, the run waits and says why."""
        if not self.budget_wait:
            open_tasks = identity_open_tasks(self.db) + (self._fake if self.check_mode else 0)
            if open_tasks >= self.config["identity_max_open_tasks"]:
                self.budget_wait = budget_reason(open_tasks, self.config["identity_max_open_tasks"])
        return not self.budget_wait

    def submit_task(self, document, kind, link):
        """Submit exactly once, if the budget still has room when the task is recorded (checked in
        that write transaction, as globus_transfer's claim does); None when it has not. The
        submission id is fetched first, so that no write lock is held across a network call."""
        submission_id = new_submission_id(self.client)
        with self.db.transaction():
            self.budget_wait = claim_task_budget(self.db, self.config["identity_max_open_tasks"])
            if self.budget_wait:
                return None
            persist_submission(self.db, self.client, self.job, document, link=link, kind=kind,
                               submission_id=submission_id)
        return post_submission(self.db, self.client, submission_id, on_rejected=settled_by_the_index)

    def submit_batch(self, dest_id, files, retry):
        """One transfer task for ``files``: its report, or None when the task budget has no room."""
        config = self.config
        if not self.room_for_task():
            return None
        destination = self.destinations[dest_id]
        items = [dict(source_path=join_path(config["source_path"], f["path"]),
                      destination_path=join_path(destination["path"], f["path"]), recursive=False) for f in files]
        label = render_label(config["label"], route=self.job, items=len(items),
                             first=label_name(files[0]["path"]),
                             date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
                             attempt=2 if retry else 1)
        document = transfer_document(config["source_collection"], destination["collection"], items,
                                     config["options"], label, retry=retry)
        report = dict(destination_collection=destination["collection"], destination_path=destination["path"],
                      items=len(items), sync_level=document["sync_level"], label=label,
                      paths=[shown_name(f["path"]) for f in files[:config["sample_size"]]])
        if self.check_mode:
            self._fake += 1
            self.index.record_submission("check-mode-%d" % self._fake, dest_id, "transfer", files)
            return report

        def link(db, submission_id):
            self.index.record_submission(submission_id, dest_id, "transfer", files)

        result = self.submit_task(document, "transfer", link)
        if result is None:
            return None
        report.update((key, value) for key, value in result.items() if key in ("submission_id", "task_id", "code", "error"))
        return report

    # -- 5. deletes on the destination (only when asked) ---------------------------------------
    def submit_deletes(self):
        config = self.config
        options = config["options"]
        reports = []
        for dest_id in self.dest_ids:
            destination = self.destinations[dest_id]
            while True:
                paths = self.index.gone_paths(dest_id, config["items_per_task"])
                home_relative = [p for p in paths if self.read_as_home(dest_id, p)]
                if home_relative:
                    # A delete of /~/... would remove files in the user's home directory there.
                    self.index.forget_gone(dest_id, home_relative)
                    shown = ", ".join(shown_name(p) for p in home_relative[:5])
                    self.warn("not deleted on %s: %s (%s)" % (destination["collection"], shown, HOME_RELATIVE))
                    continue
                if not paths or not self.room_for_task():
                    break
                label = render_label(config["label"], route=self.job, items=len(paths),
                                     first=label_name(paths[0]),
                                     date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), attempt=1)
                document = {
                    "DATA_TYPE": "delete", "endpoint": destination["collection"], "label": label, "recursive": True,
                    "ignore_missing": True, "notify_on_succeeded": options["notify_on_succeeded"],
                    "notify_on_failed": options["notify_on_failed"],
                    "notify_on_inactive": options["notify_on_inactive"],
                    "DATA": [{"DATA_TYPE": "delete_item", "path": join_path(destination["path"], p)} for p in paths],
                }
                report = dict(destination_collection=destination["collection"], destination_path=destination["path"],
                              items=len(paths), paths=[shown_name(p) for p in paths[:config["sample_size"]]])
                if self.check_mode:
                    self._fake += 1
                    self.index.record_submission("check-mode-%d" % self._fake, dest_id, "delete", gone=paths)
                else:
                    def link(db, submission_id, dest_id=dest_id, paths=paths):
                        self.index.record_submission(submission_id, dest_id, "delete", gone=paths)

                    result = self.submit_task(document, "delete", link)
                    if result is None:
                        break  # no task budget left: the deletes stay queued
                    report.update((key, value) for key, value in result.items()
                                  if key in ("submission_id", "task_id", "error"))
                reports.append(report)
        return reports

    # -- the dashboard's row ---------------------------------------------------------------------
    def record_job(self, started, scan, result):
        record_job(self.db, self.job, self.config["src_dir"], started, time.time(), result["index"]["files"],
                   result["pending"], dict(counts=result["counts"], tasks=len(result["tasks"]),
                                           settled=result["settled"], in_flight=result["in_flight"],
                                           quarantined=result["quarantined"],
                                           changed=result["changed"], scan_seconds=result["scan_seconds"]))


def planned_diff(tasks, deletes, limit):
    """--diff: per destination, up to ``limit`` paths the run sends (+) and deletes (-), then how
    many more."""
    per_dest = collections.OrderedDict()
    for sign, reports in (("+", tasks), ("-", deletes)):
        for report in reports:
            lines = per_dest.setdefault((report["destination_collection"], report["destination_path"]),
                                        collections.OrderedDict((("+", [[], 0]), ("-", [[], 0]))))[sign]
            lines[1] += report["items"]
            lines[0].extend(report["paths"][:max(limit - len(lines[0]), 0)])
    text = []
    for (collection, path), signs in per_dest.items():
        text.append("%s:%s" % (collection, path))
        for sign, (paths, total) in signs.items():
            text.extend("%s %s" % (sign, p) for p in paths)
            if total > len(paths):
                text.append("%s ... and %d more" % (sign, total - len(paths)))
    return "\n".join(text) + "\n" if text else ""


def task_groups(files, needs_checksum):
    """The tasks for ``files``: those that need no checksum together, then those that do, files
    of a failed task in tasks no larger than their ``batch`` (a failed task is retried in halves)."""
    normal = [f for f in files if not needs_checksum(f)]
    careful = sorted((f for f in files if needs_checksum(f)), key=lambda f: f["batch"] or len(files))
    groups = [(normal, False)] if normal else []
    while careful:
        size = careful[0]["batch"] or len(careful)
        groups.append((careful[:size], True))
        careful = careful[size:]
    return groups


def settled_by_the_index(db, submission_id, message):
    """``on_rejected`` of dir_trie_sync's submissions: a request Globus refused is never sent again,
    and its files go back to pending when the index settles the REJECTED task row."""


def failure_reason(row):
    """What a failed, LOST or REJECTED task's row says went wrong: its fatal error, else its nice_status."""
    if row["status"] == "SUCCEEDED":
        return None
    if row["fatal_error"]:
        fatal = json.loads(row["fatal_error"])
        return "%s: %s" % (fatal.get("code"), fatal.get("description"))
    return row["nice_status"] or "FAILED"


def record_job(db, job, src_dir, run_at, scan_at, files_indexed, files_pending, summary):
    """Upsert the job's ``sync_jobs`` row (the dashboard reads it)."""
    db.upsert("sync_jobs", [dict(name=job, kind=KIND, source=src_dir, last_run_at=run_at, last_scan_at=scan_at,
                                 files_indexed=files_indexed, files_pending=files_pending,
                                 last_result=json.dumps(summary, sort_keys=True, default=str), updated_at=time.time())],
              key=["name"], update=["kind", "source", "last_run_at", "last_scan_at", "files_indexed", "files_pending",
                                    "last_result", "updated_at"])


def scan_workers(requested):
    """The scan_workers option: 0 is one per CPU this process may use, at most MAX_SCAN_WORKERS."""
    if requested < 0:
        raise ConfigError("scan_workers must be 0 (one per CPU) or more")
    if requested:
        return requested
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_SCAN_WORKERS)


def check_options(config):
    """Option combinations that cannot work, before anything is touched."""
    if config.get("items_per_task", 1) < 1:
        raise ConfigError("items_per_task must be at least 1")
    if config.get("max_file_failures", 1) < 1 or config.get("file_retry_backoff", 0) < 0:
        raise ConfigError("max_file_failures must be at least 1 and file_retry_backoff at least 0")
    for pattern in list(config.get("include") or []) + list(config.get("exclude") or []):
        if not pattern.strip("/"):
            raise ConfigError("an include/exclude pattern must not be empty")
    if config.get("source_path") and not config["source_path"].startswith(("/", "~")):
        raise ConfigError("source_path must be an absolute collection path, got %s" % config["source_path"])
    for destination in config.get("destinations") or []:
        if not destination["path"].startswith(("/", "~")):
            raise ConfigError("destination path must be an absolute collection path, got %s" % destination["path"])
