# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""A stand-in facility site for the EPN module tests (standard library plus the harness).

EPN folder trees on the "SFTP server" (the harness's sshd serves the local file system),
portal visits relative to now, the SSH options of a harness sshd, database reads, and
process helpers to stop exactly the processes a test started.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import signal
import time

from ansible_collections.scidata.replication.plugins.module_utils._state import StateDB

PORTAL_SECRETS = {
    "client_password_1": "cl1ent-pw-9d2f7a",
    "client_password_2": "cl1ent-pw-41b8ee",
    "password_1": "us3r-pw-c0ffee17",
    "password_2": "us3r-pw-deadbe42",
}


def ssh_args(info, **extra):
    """The module's SSH options for a harness sshd (``info`` as in ``services.SshServer``)."""
    args = {"host": info["host"], "port": info["port"], "user": info["user"], "key_file": info["key_file"],
            "known_hosts_file": info["known_hosts"], "connect_timeout": 5}
    args.update(extra)
    return args


def portal_config(visits_101, visits_102=()):
    return {
        "clients": [{"client_name": "mx-client-1", "client_password": PORTAL_SECRETS["client_password_1"]},
                    {"client_name": "mx-client-2", "client_password": PORTAL_SECRETS["client_password_2"]}],
        "users": [{"username": "mxuser1", "password": PORTAL_SECRETS["password_1"]},
                  {"username": "mxuser2", "password": PORTAL_SECRETS["password_2"]}],
        "equipment": {"101": {"visits": list(visits_101), "users": ["mxuser1"]},
                      "102": {"visits": list(visits_102), "users": ["mxuser2"]}},
        "token_lifetime_seconds": 3600,
    }


def portal_args(portal, visit_day_range=30):
    return {
        "portal_url": portal.base_url,
        "equipment": [
            {"id": "101", "client_name": "mx-client-1", "client_password": PORTAL_SECRETS["client_password_1"],
             "username": "mxuser1", "password": PORTAL_SECRETS["password_1"]},
            {"id": "102", "client_name": "mx-client-2", "client_password": PORTAL_SECRETS["client_password_2"],
             "username": "mxuser2", "password": PORTAL_SECRETS["password_2"]},
        ],
        "visit_day_range": visit_day_range,
        # The test server speaks plain HTTP; failed requests are retried at once.
        "portal_allow_http": True,
        "portal_retry_delay": 0,
    }


def when(**delta):
    """ISO 8601 time relative to now (UTC), e.g. ``when(days=-3)``."""
    return (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(**delta)).isoformat(timespec="seconds")


def visit(epn, start, end, pi=("Ada", "Lovelace", "ada@example.org"), scientists=(("Alan", "Turing", "alan@example.org"),)):
    return {
        "epn": epn,
        "start_time": start,
        "end_time": end,
        "principal_scientist": {"first_names": pi[0], "last_name": pi[1], "email": pi[2]},
        "data_scientists": [{"first_names": f, "last_name": l, "email": e} for f, l, e in scientists],
    }


def make_epn(root, epn, files):
    """Create ``root/epn`` with ``files`` ({relative path: bytes}); returns its path."""
    base = os.path.join(str(root), epn)
    os.makedirs(base, exist_ok=True)
    for relative, content in files.items():
        path = os.path.join(base, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(content)
    return base


def tree(root, skip=(".rsync-partial",)):
    """``{relative path: sha256}`` of the regular files under ``root`` (and ``None`` for folders).

    Symbolic links are left out, as rsync without ``--links`` leaves them out.
    """
    found = {}
    for directory, dirnames, filenames in os.walk(str(root)):
        dirnames[:] = [d for d in dirnames if d not in skip and not os.path.islink(os.path.join(directory, d))]
        for name in dirnames:
            found[os.path.relpath(os.path.join(directory, name), str(root))] = None
        for name in filenames:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as handle:
                found[os.path.relpath(path, str(root))] = hashlib.sha256(handle.read()).hexdigest()
    return found


def rsync_view(root):
    """What rsync's default filter (--include=.info --exclude=.*) copies of ``tree(root)``."""
    def kept(relative):
        return all(part == ".info" or not part.startswith(".") for part in relative.split(os.sep))
    return {k: v for k, v in tree(root).items() if kept(k)}


def query(url, sql, params=()):
    db = StateDB(url)
    try:
        return db.query(sql, params)
    finally:
        db.close()


def table_exists(url, table="epns"):
    db = StateDB(url)
    try:
        return db.schema_version() > 0 and bool(db.query("SELECT 1 FROM %s LIMIT 1" % table) is not None)
    finally:
        db.close()


def migrate(url):
    db = StateDB(url)
    try:
        db.migrate()
    finally:
        db.close()


# -- processes ------------------------------------------------------------------------------

def children(pid):
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def descendants(pid):
    found, stack = [], [pid]
    while stack:
        for child in children(stack.pop()):
            found.append(child)
            stack.append(child)
    return found


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return []


def wait_for(predicate, timeout=60, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def kill(pids, sig=signal.SIGKILL):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def module_processes(playbook_pid, module_name):
    """PIDs of the module's Python process under an ansible-playbook started by the test."""
    return [pid for pid in descendants(playbook_pid)
            if any(("AnsiballZ_%s" % module_name).encode() in part for part in cmdline(pid))
            and os.path.basename(cmdline(pid)[0]).startswith(b"python")]


def top_rsyncs(parent_pids, marker):
    """rsync processes (the top-level client, not its forked receiver) whose argv mentions ``marker``."""
    found = []
    for parent in parent_pids:
        for pid in children(parent):
            argv = cmdline(pid)
            if argv and os.path.basename(argv[0]) == b"rsync" and any(marker.encode() in part for part in argv):
                found.append(pid)
    return found


def restart_sshd(server):
    """Start a stopped ``services.SshServer`` again with the same port, keys and config."""
    config = os.path.join(server.workdir, "sshd_config")
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    server._spawn([sshd, "-D", "-e", "-f", config])  # pylint: disable=protected-access
    import services  # tests/harness, on sys.path through tests/conftest.py

    services.wait_for_port(server.info["port"], process=server.process)


def stop_sshd_and_sessions(server):
    """Stop the sshd listener and every session it serves (what a crash of the server does).

    The listener is reaped here: ``Service.stop`` would wait for the zombie of a child of
    this process to disappear, which it never does until reaped.
    """
    with open(server.pid_file) as handle:
        pid = int(handle.read())
    sessions = descendants(pid)
    kill([pid], signal.SIGTERM)
    kill(sessions)
    if server.process is not None:
        server.process.wait(timeout=30)
        server.process = None
    os.unlink(server.pid_file)
