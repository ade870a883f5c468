# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Planning: expand submitted items into the operations a runner executes.

Planning happens on a task's first run (as the service expands a recursive item when it starts
working on it): recursive items are walked with filter rules applied and symlinks ignored
(``recursive_symlinks: "ignore"``), and source errors become skipped paths under
``skip_source_errors`` or a fatal error otherwise.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath

from .faults import SKIPPABLE_CODES
from .util import contained, normalize_collection_path, to_local


class TaskError(Exception):
    """An error event code raised while planning or executing an operation."""

    def __init__(self, code, description, details, source_side=False, is_directory=False, paths=None):
        super().__init__(f"{code}: {details}")
        self.code = code
        self.description = description
        self.details = details
        self.source_side = source_side
        self.is_directory = is_directory
        self.paths = paths or (None, None)


def describe(code):
    return code.lower().replace("_", " ")


class TransferPlanner:
    """Expands transfer items into mkdir / file / prune operations (filters applied)."""

    def __init__(self, task):
        self.task = task
        self.files = 0
        self.directories = 0
        self.total_bytes = 0
        self.skipped = []

    def source_error(self, code, item, message, is_directory=False):
        task = self.task
        details = (f"Error (transfer)\nEndpoint: {task.source.display_name} ({task.source.id})\n"
                   f"File: {item['source_path']}\nMessage: {message}\n")
        if code in SKIPPABLE_CODES and task.options.get("skip_source_errors"):
            self.skipped.append({"source_path": item["source_path"], "destination_path": item["destination_path"],
                                 "error_code": code, "error_details": details, "is_directory": is_directory})
            return
        raise TaskError(code, describe(code), details, source_side=True)

    def plan(self):
        task = self.task
        ops = []
        for item in task.items:
            src_c = normalize_collection_path(item["source_path"])
            dst_c = normalize_collection_path(item["destination_path"])
            if dst_c is None or not contained(task.destination.root, to_local(task.destination.root, dst_c)):
                raise TaskError("PERMISSION_DENIED", "permission denied",
                                f"Path not allowed on destination: {item['destination_path']}")
            if src_c is None or not contained(task.source.root, to_local(task.source.root, src_c)):
                self.source_error("PERMISSION_DENIED", item, "Path not allowed")
                continue
            src = to_local(task.source.root, src_c)
            dst = to_local(task.destination.root, dst_c)
            if not os.path.exists(src):
                self.source_error("FILE_NOT_FOUND", item, "No such file or directory")
                continue
            is_dir = os.path.isdir(src)
            recursive = item.get("recursive")
            if recursive is None:
                recursive = is_dir
            if recursive and not is_dir:
                raise TaskError("NOT_A_DIRECTORY", "not a directory",
                                f"{item['source_path']} is a file but the item is recursive")
            if is_dir and item.get("external_checksum"):
                raise TaskError("INVALID_ARGUMENT", "invalid argument",
                                f"{item['source_path']} is a directory; external_checksum needs a file")
            if is_dir and not recursive:
                raise TaskError("IS_A_DIRECTORY", "is a directory",
                                f"{item['source_path']} is a directory; submit it with recursive=true")
            if not is_dir:
                size = os.path.getsize(src)
                op = file_op(src, dst, item["source_path"], item["destination_path"])
                op.update((key, item[key]) for key in ("external_checksum", "checksum_algorithm") if item.get(key))
                ops.append(op)
                self.files += 1
                self.total_bytes += size
                continue
            ops.extend(self.walk(item, src, dst))
        return ops

    def walk(self, item, src_root, dst_root):
        rules = self.task.options.get("filter_rules")
        ops = [{"op": "mkdir", "dst": dst_root, "cpaths": (item["source_path"], item["destination_path"])}]
        self.directories += 1
        keep = set()
        for dirpath, dirnames, filenames in os.walk(src_root):
            rel_dir = os.path.relpath(dirpath, src_root)
            rel_dir = "" if rel_dir == "." else rel_dir
            kept_dirs = []
            for name in sorted(dirnames):
                full = os.path.join(dirpath, name)
                if os.path.islink(full) or not match_filter_rules(rules, name, True):
                    continue  # recursive_symlinks "ignore"; excluded directories are pruned
                kept_dirs.append(name)
                rel = os.path.join(rel_dir, name)
                keep.add(rel)
                ops.append({"op": "mkdir", "dst": os.path.join(dst_root, rel),
                            "cpaths": (join_c(item["source_path"], rel), join_c(item["destination_path"], rel))})
                self.directories += 1
            dirnames[:] = kept_dirs
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if os.path.islink(full) or not match_filter_rules(rules, name, False):
                    continue
                rel = os.path.join(rel_dir, name)
                keep.add(rel)
                ops.append(file_op(full, os.path.join(dst_root, rel), join_c(item["source_path"], rel),
                                   join_c(item["destination_path"], rel)))
                self.files += 1
                self.total_bytes += os.path.getsize(full)
        if self.task.options.get("delete_destination_extra"):
            ops.append({"op": "prune", "dst": dst_root, "keep": keep, "cpaths": (None, item["destination_path"])})
        return ops


class DeletePlanner:
    """Expands delete items into file and (deepest first) directory removals."""

    def __init__(self, task):
        self.task = task
        self.files = 0
        self.directories = 0
        self.total_bytes = 0
        self.skipped = []

    def plan(self):
        task = self.task
        ops = []
        for item in task.items:
            cpath = normalize_collection_path(item["path"])
            if cpath is None or cpath == "/" or not contained(task.source.root, to_local(task.source.root, cpath)):
                raise TaskError("PERMISSION_DENIED", "permission denied", f"Path not allowed: {item['path']}")
            local = to_local(task.source.root, cpath)
            if not os.path.lexists(local):
                if task.options.get("ignore_missing"):
                    continue
                raise TaskError("FILE_NOT_FOUND", "file not found", f"No such file or directory: {item['path']}")
            if os.path.isdir(local) and not os.path.islink(local):
                if not task.options.get("recursive"):
                    raise TaskError("IS_A_DIRECTORY", "is a directory",
                                    f"{item['path']} is a directory; submit the delete with recursive=true")
                for dirpath, dirnames, filenames in os.walk(local, topdown=False):
                    rel_dir = os.path.relpath(dirpath, local)
                    for name in sorted(filenames) + [d for d in sorted(dirnames)
                                                     if os.path.islink(os.path.join(dirpath, d))]:
                        path = os.path.join(dirpath, name)
                        ops.append({"op": "delete", "src": path, "is_dir": False,
                                    "cpaths": (join_c(item["path"], os.path.join(rel_dir, name)), None)})
                        self.files += 1
                    ops.append({"op": "delete", "src": dirpath, "is_dir": True,
                                "cpaths": (join_c(item["path"], "" if rel_dir == "." else rel_dir), None)})
                    self.directories += 1
            else:
                ops.append({"op": "delete", "src": local, "is_dir": False, "cpaths": (item["path"], None)})
                self.files += 1
        return ops


def match_filter_rules(rules, name, is_dir):
    """First matching rule decides; no match means include (docs, task submission)."""
    for rule in rules or []:
        if rule.get("type") == "dir" and not is_dir:
            continue
        if rule.get("type") == "file" and is_dir:
            continue
        if fnmatch.fnmatchcase(name, rule["name"]):
            return rule["method"] == "include"
    return True


def file_op(src, dst, src_c, dst_c):
    return {"op": "file", "src": src, "dst": dst, "cpaths": (src_c, dst_c)}


def join_c(base, rel):
    """Join a collection path and a relative path the way listings report them."""
    rel = rel.replace(os.sep, "/")
    if rel in ("", "."):
        return base
    return posixpath.join(base.rstrip("/") or "/", posixpath.normpath(rel))
