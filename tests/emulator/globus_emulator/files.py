# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Synchronous file operations on a collection: ls, stat, mkdir and rename.

Document shapes follow recorded responses (``file_list`` with ``file`` entries, ``mkdir_result``
with ``DirectoryCreated``); errors follow the service's codes: 404 ``ClientError.NotFound`` for a
missing directory, 502 ``ExternalError.MkdirFailed.Exists`` when mkdir hits an existing path, 403
``EndpointPermissionDenied`` for paths outside what the collection allows.
"""

from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import stat as stat_mod

from .util import APIError, contained, iso_space, normalize_collection_path, parse_time, request_id, to_local


def _owner(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def resolve(coll, path, default="/~/"):
    """Map a request path to (collection path, local path) or raise the permission error."""
    path = path or default
    cpath = normalize_collection_path(path)
    local = to_local(coll.root, cpath) if cpath is not None else None
    if cpath is None or not contained(coll.root, local):
        raise APIError(403, "EndpointPermissionDenied",
                       f"Denied by endpoint, Error (list)\nEndpoint: {coll.display_name} ({coll.id})\n"
                       f"Command: MLST {path}\nMessage: Fatal FTP Response\n---\n"
                       f"Details: 500 Command failed : Path not allowed.\\r\\n\n")
    return cpath, local


def file_doc(name, local):
    """One ``file`` document; symlinks report their target, broken ones are invalid_symlink."""
    lst = os.lstat(local)
    doc = {
        "DATA_TYPE": "file",
        "group": _group(lst.st_gid),
        "last_modified": iso_space(lst.st_mtime),
        "link_group": None,
        "link_last_modified": None,
        "link_size": None,
        "link_target": None,
        "link_user": None,
        "name": name,
        "permissions": f"{stat_mod.S_IMODE(lst.st_mode):04o}",
        "size": lst.st_size,
        "type": "dir" if stat_mod.S_ISDIR(lst.st_mode) else "file",
        "user": _owner(lst.st_uid),
    }
    if stat_mod.S_ISLNK(lst.st_mode):
        doc["link_target"] = os.readlink(local)
        doc["link_group"] = doc["group"]
        doc["link_user"] = doc["user"]
        doc["link_last_modified"] = doc["last_modified"]
        doc["link_size"] = lst.st_size
        try:
            target = os.stat(local)
        except OSError:
            doc["type"] = "invalid_symlink"
        else:
            doc["type"] = "dir" if stat_mod.S_ISDIR(target.st_mode) else "file"
            doc["size"] = target.st_size
            doc["last_modified"] = iso_space(target.st_mtime)
            doc["permissions"] = f"{stat_mod.S_IMODE(target.st_mode):04o}"
    return doc


def _not_found(coll, path, command):
    return APIError(404, "ClientError.NotFound",
                    f"Directory '{path}' not found on endpoint '{coll.id}'\nError ({command})\n"
                    f"Endpoint: {coll.display_name} ({coll.id})\nMessage: No such file or directory\n")


def _file_filters(text):
    """ls ``filter``: clauses joined by ``/``; ``name:`` (``~glob``, ``!value``), ``type:``, ``size:``,
    ``last_modified:start,end``."""
    preds = []
    for clause in [c for c in (text or "").split("/") if c]:
        key, sep, value = clause.partition(":")
        if not sep:
            raise APIError(400, "ClientError.BadRequest", f"Invalid filter clause '{clause}'")
        if key == "name":
            if value.startswith("~"):
                preds.append(lambda d, v=value[1:]: fnmatch.fnmatchcase(d["name"], v))
            elif value.startswith("!~"):
                preds.append(lambda d, v=value[2:]: not fnmatch.fnmatchcase(d["name"], v))
            elif value.startswith("!"):
                preds.append(lambda d, v=value[1:]: d["name"] != v)
            else:
                names = set(value.split(","))
                preds.append(lambda d, n=names: d["name"] in n)
        elif key == "type":
            types = set(value.split(","))
            preds.append(lambda d, t=types: d["type"] in t)
        elif key in ("size", "last_modified"):
            lo, _sep, hi = value.partition(",")
            if key == "size":
                lo_v = int(lo) if lo else None
                hi_v = int(hi) if hi else None
                preds.append(lambda d, a=lo_v, b=hi_v: (a is None or d["size"] >= a) and (b is None or d["size"] <= b))
            else:
                lo_v = parse_time(lo) if lo else None
                hi_v = parse_time(hi) if hi else None
                preds.append(lambda d, a=lo_v, b=hi_v: (a is None or parse_time(d["last_modified"]) >= a)
                             and (b is None or parse_time(d["last_modified"]) <= b))
        else:
            raise APIError(400, "ClientError.BadRequest", f"Unsupported filter field '{key}'")
    return preds


def ls(coll, query):
    path = query.get("path") or "/~/"
    cpath, local = resolve(coll, path)
    if not os.path.exists(local):
        raise _not_found(coll, path, "list")
    if not os.path.isdir(local):
        raise APIError(502, "ExternalError.DirListingFailed.NotDirectory",
                       f"Directory listing failed: '{path}' is not a directory")
    show_hidden = query.get("show_hidden", "1").lower() not in ("0", "false")
    entries = []
    for name in os.listdir(local):
        if not show_hidden and name.startswith("."):
            continue
        entries.append(file_doc(name, os.path.join(local, name)))
    try:
        preds = _file_filters(query.get("filter"))
    except ValueError:
        raise APIError(400, "ClientError.BadRequest", "Invalid filter value") from None
    entries = [e for e in entries if all(p(e) for p in preds)]
    entries = _order(entries, query.get("orderby") or "name ASC")
    total = len(entries)
    offset = int(query.get("offset") or 0)
    limit = int(query.get("limit") or 100000)
    page = entries[offset:offset + limit]
    shown = path if path.startswith(("~", "/~")) else cpath
    if not shown.endswith("/"):
        shown += "/"
    return {"DATA": page, "DATA_TYPE": "file_list", "absolute_path": None, "endpoint": coll.id,
            "length": len(page), "path": shown, "rename_supported": True, "symlink_supported": True,
            "total": total}


def _order(entries, orderby):
    for clause in reversed([c.strip() for c in orderby.split(",") if c.strip()]):
        parts = clause.split()
        field = parts[0]
        if field not in ("name", "type", "size", "last_modified", "permissions", "user", "group"):
            raise APIError(400, "ClientError.BadRequest", f"Unsupported orderby field '{field}'")
        desc = len(parts) > 1 and parts[1].upper() == "DESC"
        entries.sort(key=lambda e, f=field: e[f], reverse=desc)
    return entries


def stat(coll, query):
    path = query.get("path") or "/~/"
    cpath, local = resolve(coll, path)
    if not os.path.lexists(local):
        raise APIError(404, "NotFound",
                       f"Path not found, Error (list)\nEndpoint: {coll.display_name} ({coll.id})\n"
                       f"Message: No such file or directory\n---\nDetails: Error: '{path}' not found\n")
    return file_doc(os.path.basename(cpath.rstrip("/")) or "/", local)


def mkdir(coll, body):
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise APIError(400, "ClientError.BadRequest", "'path' is required")
    if body.get("DATA_TYPE", "mkdir") != "mkdir":
        raise APIError(400, "ClientError.BadRequest", "DATA_TYPE must be 'mkdir'")
    cpath, local = resolve(coll, path)
    if os.path.lexists(local):
        raise APIError(502, "ExternalError.MkdirFailed.Exists",
                       f"Path already exists, Error Path '{path}' already exists\n"
                       f"Endpoint: {coll.display_name} ({coll.id})\n")
    try:
        os.mkdir(local)
    except FileNotFoundError:
        raise APIError(502, "ExternalError.MkdirFailed.NotFound",
                       f"Mkdir failed: the parent of '{path}' does not exist") from None
    except PermissionError:
        raise APIError(403, "EndpointPermissionDenied", f"Denied by endpoint: cannot create '{path}'") from None
    return {"DATA_TYPE": "mkdir_result", "code": "DirectoryCreated",
            "message": "The directory was created successfully", "request_id": request_id(),
            "resource": f"/operation/endpoint/{coll.id}/mkdir"}


def rename(coll, body):
    old, new = body.get("old_path"), body.get("new_path")
    if not isinstance(old, str) or not isinstance(new, str):
        raise APIError(400, "ClientError.BadRequest", "'old_path' and 'new_path' are required")
    _collection, old_local = resolve(coll, old)
    _collection, new_local = resolve(coll, new)
    if not os.path.lexists(old_local):
        raise APIError(502, "ExternalError.RenameFailed.NotFound", f"Rename failed: '{old}' does not exist")
    if os.path.lexists(new_local):
        raise APIError(502, "ExternalError.RenameFailed.Exists", f"Rename failed: '{new}' already exists")
    os.rename(old_local, new_local)
    return {"DATA_TYPE": "result", "code": "FileRenamed", "message": "File or directory renamed successfully",
            "request_id": request_id(), "resource": f"/operation/endpoint/{coll.id}/rename"}
