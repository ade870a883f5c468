# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""Pure building blocks for running rsync pulls safely.

Builds the rsync argv list (no shell) and the ``-e`` ssh command, classifies rsync exit
codes with a configurable policy, computes retry backoff, and parses the ``--stats``,
itemized-change and ``--version`` output. Nothing here runs a process: callers pass the
argv to ``AnsibleModule.run_command`` with ``RSYNC_ENVIRONMENT`` and feed its output back.
"""

from __future__ import annotations

import re
import signal

from ansible_collections.scidata.replication.plugins.module_utils._errors import (
    ConfigError,
    RsyncError,
)

DEFAULT_PARTIAL_DIR = ".rsync-partial"
DEFAULT_IO_TIMEOUT = 300
DEFAULT_CONNECT_TIMEOUT = 30
DEFAULT_SERVER_ALIVE_INTERVAL = 15
DEFAULT_SERVER_ALIVE_COUNT_MAX = 4

# Prefix on every itemized line so they cannot be confused with --stats or error lines.
CHANGE_MARKER = "<<CHANGED>>"
CHANGE_OUT_FORMAT = CHANGE_MARKER + "%i %n"

# mxsync's intent: recursive, times, permissions normalised by --chmod, size-only
# comparison, statistics, ``.info`` kept and other dotfiles skipped (build_rsync_argv adds
# --partial-dir). Options are spelled out so live and check-mode runs are identical
# (mxsync's ``-stats`` typo silently turned on archive mode for live runs only).
# Modes: the project group reads and writes everything, folders are setgid so new files
# keep the group, and others get nothing (folders 2770, files 660, or 770 when executable).
DATA_CHMOD = "D2770,Fug+rwX,Fo-rwx"
DEFAULT_OPTIONS = (
    "--recursive",
    "--times",
    "--perms",
    "--chmod=" + DATA_CHMOD,
    "--size-only",
    "--stats",
    "--out-format=" + CHANGE_OUT_FORMAT,
    "--include=.info",
    "--exclude=.*",
)
CHECK_MODE_OPTIONS = ("--dry-run", "--itemize-changes")

# C locale: stable ``1,234`` number formatting and ``\#ooo`` escapes in file names.
# RSYNC_OLD_ARGS=0 stops a user's environment from turning argument protection off.
RSYNC_ENVIRONMENT = {"LC_ALL": "C", "RSYNC_OLD_ARGS": "0"}

# The only extra arguments accepted, by their full long name (rsync also takes any
# unambiguous prefix, such as --no-s for --no-secluded-args, so names are matched exactly):
# True when the option takes ``=value``. Nothing here changes the remote shell, argument
# protection, name encoding, the output the results are parsed from, or deletes anything.
SAFE_EXTRA_ARGS = {
    "--checksum": False,
    "--ignore-times": False,
    "--numeric-ids": False,
    "--omit-dir-times": False,
    "--prune-empty-dirs": False,
    "--sparse": False,
    "--whole-file": False,
    "--no-whole-file": False,
    "--ipv4": False,
    "--ipv6": False,
    "--exclude": True,
    "--include": True,
    "--filter": True,
    "--max-size": True,
    "--min-size": True,
    "--modify-window": True,
    "--block-size": True,
    "--compress-choice": True,
    "--compress-level": True,
    "--skip-compress": True,
    "--checksum-choice": True,
    "--rsync-path": True,
}

MINIMUM_SAFE_VERSION = (3, 4, 0)

EXIT_CODE_MEANINGS = {
    0: "success",
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting input/output files, dirs",
    4: "requested action not supported",
    5: "error starting client-server protocol",
    6: "daemon unable to append to log-file",
    10: "error in socket I/O",
    11: "error in file I/O",
    12: "error in rsync protocol data stream",
    13: "errors with program diagnostics",
    14: "error in IPC code",
    15: "sibling process crashed",
    16: "sibling process terminated abnormally",
    19: "received SIGUSR1",
    20: "received SIGINT, SIGTERM, or SIGHUP",
    21: "some error returned by waitpid()",
    22: "error allocating core memory buffers",
    23: "partial transfer due to error",
    24: "partial transfer due to vanished source files",
    25: "the --max-delete limit stopped deletions",
    30: "timeout in data send/receive",
    35: "timeout waiting for daemon connection",
    124: "remote shell failed",
    125: "remote shell killed",
    126: "remote command could not be run",
    127: "remote command not found",
    255: "ssh connection failed",
}

ACTION_SUCCESS = "success"
ACTION_WARN = "warn"
ACTION_RETRY = "retry"
ACTION_RETRY_ONCE = "retry_once"
ACTION_FATAL = "fatal"
ACTION_STOP = "stop"
ACTIONS = (ACTION_SUCCESS, ACTION_WARN, ACTION_RETRY, ACTION_RETRY_ONCE, ACTION_FATAL, ACTION_STOP)

DEFAULT_EXIT_POLICY = {0: ACTION_SUCCESS, 24: ACTION_WARN, 20: ACTION_STOP}
DEFAULT_EXIT_POLICY.update(dict.fromkeys((5, 10, 12, 30, 35, 255), ACTION_RETRY))
DEFAULT_EXIT_POLICY.update(dict.fromkeys((11, 14, 21, 22, 23), ACTION_RETRY_ONCE))
DEFAULT_EXIT_POLICY.update(dict.fromkeys((1, 2, 3, 4, 13, 25), ACTION_FATAL))

# What resolve_exit_code() tells the caller to do with the transfer.
STATUS_SUCCESS = "success"
STATUS_WARNING = "warning"
STATUS_RETRY = "retry"
STATUS_FAILED = "failed"
STATUS_FATAL = "fatal"
STATUS_STOP = "stop"

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_INITIAL = 300
DEFAULT_BACKOFF_FACTOR = 2
DEFAULT_BACKOFF_MAXIMUM = 86400

_SSH_PATH_RE = re.compile(r"[A-Za-z0-9._/+@,=:-]+")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+-]*")
_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_BWLIMIT_RE = re.compile(r"[0-9]+(\.[0-9]+)?[KMGkmg]?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# The remote rsync expands these even with --protect-args, so a path holding them can
# name other files than the one meant.
_GLOB_CHARS = "*?["
_REMOTE_RE = re.compile(r"(?P<user>[^/]+)@(?P<host>\[[^\]/]*\]|[^:/\[\]]+):(?P<path>.*)", re.DOTALL)
_VERSION_RE = re.compile(
    r"rsync\s+version\s+v?(?P<version>(?P<major>[0-9]+)\.(?P<minor>[0-9]+)(?:\.(?P<patch>[0-9]+))?\S*)"
    r"(?:\s+protocol\s+version\s+(?P<protocol>[0-9]+))?"
)
_ESCAPE_RE = re.compile(rb"\\#([0-7]{3})")
_ITEMIZE_RE = re.compile(r"([<>ch.*][fdLDS][^ ]{9}|\*deleting  ) (.+)", re.DOTALL)

_STATS_FIELDS = {
    "Number of files": "number_of_files",
    "Number of created files": "number_of_created_files",
    "Number of deleted files": "number_of_deleted_files",
    "Number of regular files transferred": "regular_files_transferred",
    # rsync < 3.1 wording of the same counter.
    "Number of files transferred": "regular_files_transferred",
    "Total file size": "total_file_size",
    "Total transferred file size": "total_transferred_file_size",
    "Literal data": "literal_data",
    "Matched data": "matched_data",
    "File list size": "file_list_size",
    "Total bytes sent": "total_bytes_sent",
    "Total bytes received": "total_bytes_received",
}
_STATS_RE = re.compile(r"^(?P<label>[A-Za-z ]+): (?P<number>[0-9][0-9,.' ]*)", re.MULTILINE)


def _positive_int(name, value, minimum=1, maximum=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError("%s must be an integer of at least %d" % (name, minimum), option=name)
    if maximum is not None and value > maximum:
        raise ConfigError("%s must be at most %d" % (name, maximum), option=name)
    return value


def _ssh_word(name, value):
    """Check one ssh path so it survives rsync's -e splitting and ssh's own parsing.

    rsync splits -e on spaces and honours quotes; ssh expands ``%`` tokens and splits
    ``-o`` values on whitespace. A short whitelist keeps all three from mattering.
    """
    if not isinstance(value, str) or not _SSH_PATH_RE.fullmatch(value):
        raise ConfigError(
            "%s may only contain letters, digits and . _ / + @ , = : - (no spaces, quotes or %%)" % name,
            option=name,
        )
    return value


def build_ssh_command(
    port=22,
    key_file=None,
    known_hosts_file=None,
    connect_timeout=DEFAULT_CONNECT_TIMEOUT,
    server_alive_interval=DEFAULT_SERVER_ALIVE_INTERVAL,
    server_alive_count_max=DEFAULT_SERVER_ALIVE_COUNT_MAX,
    ssh_path="ssh",
):
    """Return the ``-e`` value: a non-interactive, self-contained ssh that checks host keys strictly.

    Only ``key_file`` is offered (IdentitiesOnly), and with ``known_hosts_file`` only that
    file's keys are trusted (the system-wide known_hosts is not read).
    """
    _positive_int("port", port, 1, 65535)
    # -F /dev/null: no ~/.ssh/config or /etc/ssh/ssh_config; everything ssh does is on this line.
    words = [_ssh_word("ssh_path", ssh_path), "-F", "/dev/null", "-p", str(port)]
    if key_file is not None:
        if not str(key_file).startswith("/"):
            raise ConfigError("key_file must be an absolute path", option="key_file")
        words += ["-i", _ssh_word("key_file", key_file)]
    if key_file is not None:
        words += ["-o", "IdentitiesOnly=yes"]
    words += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if known_hosts_file is not None:
        if not str(known_hosts_file).startswith("/"):
            raise ConfigError("known_hosts_file must be an absolute path", option="known_hosts_file")
        words += ["-o", "UserKnownHostsFile=" + _ssh_word("known_hosts_file", known_hosts_file),
                  "-o", "GlobalKnownHostsFile=/dev/null"]
    words += [
        "-o", "ConnectTimeout=%d" % _positive_int("connect_timeout", connect_timeout),
        "-o", "ServerAliveInterval=%d" % _positive_int("server_alive_interval", server_alive_interval),
        "-o", "ServerAliveCountMax=%d" % _positive_int("server_alive_count_max", server_alive_count_max),
    ]
    # Every word is single-quoted for rsync's -e splitter; the whitelist rules out quotes.
    return " ".join("'%s'" % word for word in words)


def remote_source(user, host, path):
    """Return ``user@host:path`` after checking each part cannot be misread."""
    if not isinstance(user, str) or not _USER_RE.fullmatch(user):
        raise ConfigError("remote user %r is not a valid login name" % (user,), option="user")
    if not isinstance(host, str) or not _HOST_RE.fullmatch(host):
        raise ConfigError("remote host %r is not a valid host name" % (host,), option="host")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError("remote path must be absolute", option="path")
    if "\x00" in path:
        raise ConfigError("remote path contains a NUL byte", option="path")
    if any(char in path for char in _GLOB_CHARS):
        raise ConfigError(
            "remote path %r contains a wildcard character (* ? [) that the remote rsync would expand" % (path,),
            option="path",
        )
    return "%s@%s:%s" % (user, host, path)


def _check_extra_args(extra_args):
    """Accept only SAFE_EXTRA_ARGS, spelled in full, with ``=value`` exactly when they take one."""
    checked = []
    for arg in extra_args or ():
        if not isinstance(arg, str):
            raise ConfigError("extra rsync arguments must be strings, got %r" % (arg,), option="extra_args")
        name, has_value, value = arg.partition("=")
        if name not in SAFE_EXTRA_ARGS:
            raise ConfigError(
                "extra rsync argument %r is not one of the allowed options (%s)" % (arg, ", ".join(sorted(SAFE_EXTRA_ARGS))),
                option="extra_args",
            )
        if SAFE_EXTRA_ARGS[name] != bool(has_value) or (has_value and not value) or _CONTROL_RE.search(arg):
            raise ConfigError(
                "extra rsync argument %r must be written %s" % (arg, name + "=VALUE" if SAFE_EXTRA_ARGS[name] else name),
                option="extra_args",
            )
        checked.append(arg)
    return checked


def build_rsync_argv(
    source,
    destination,
    *,
    rsync_path="rsync",
    ssh_command=None,
    check_mode=False,
    compress=False,
    bwlimit=None,
    timeout=DEFAULT_IO_TIMEOUT,
    partial_dir=DEFAULT_PARTIAL_DIR,
    protect_args=True,
    extra_args=None,
):
    """Return the rsync argv list for one pull of ``source`` into ``destination``.

    ``source`` is ``remote_source(...)`` or an absolute local path; ``destination`` is an
    absolute local path. Paths come last, after ``--``. ``protect_args`` sends them inside
    the rsync protocol instead of through the remote shell; turn it off only for restricted
    shells such as rrsync, relying on the escaping rsync >= 3.2.4 does by default.
    """
    if not isinstance(destination, str) or not destination.startswith("/"):
        raise ConfigError("destination must be an absolute local path", option="destination")
    if not isinstance(source, str) or not source:
        raise ConfigError("source must be a non-empty string", option="source")
    remote = None
    if not source.startswith("/"):
        remote = _REMOTE_RE.fullmatch(source)
        if remote is None:
            raise ConfigError("source must be an absolute local path or user@host:/path", option="source")
        remote_source(remote.group("user"), remote.group("host"), remote.group("path"))
    if remote is not None and not protect_args and _CONTROL_RE.search(remote.group("path")):
        # rsync's own escaping turns a newline into a shell line continuation.
        raise ConfigError("a remote path with control characters needs protect_args", option="protect_args")
    if not isinstance(partial_dir, str) or not partial_dir or _CONTROL_RE.search(partial_dir):
        raise ConfigError("partial_dir must be a non-empty path without control characters", option="partial_dir")

    argv = [rsync_path]
    argv.extend(DEFAULT_OPTIONS)
    argv.append("--partial-dir=" + partial_dir)
    if protect_args:
        argv.append("--protect-args")
    if compress:
        argv.append("--compress")
    if bwlimit is not None:
        if isinstance(bwlimit, bool) or not _BWLIMIT_RE.fullmatch(str(bwlimit)):
            raise ConfigError("bwlimit must be a number of KiB/s, optionally with a K, M or G suffix", option="bwlimit")
        argv.append("--bwlimit=%s" % bwlimit)
    if timeout is not None:
        argv.append("--timeout=%d" % _positive_int("timeout", timeout, 0))
    if ssh_command is not None:
        argv.extend(["-e", ssh_command])
    if check_mode:
        argv.extend(CHECK_MODE_OPTIONS)
    argv.extend(_check_extra_args(extra_args))
    argv.extend(["--", source, destination])
    return argv


def exit_code_meaning(rc):
    """Return rsync's description of an exit code (-N: killed by signal N), or ``unknown exit code N``."""
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "signal %d" % -rc
        return "rsync was killed by %s" % name
    return EXIT_CODE_MEANINGS.get(rc, "unknown exit code %s" % rc)


def build_exit_policy(overrides=None):
    """Return the default exit-code policy with the user's ``{code: action}`` overrides."""
    policy = dict(DEFAULT_EXIT_POLICY)
    for code, action in (overrides or {}).items():
        try:
            number = int(code)
        except (TypeError, ValueError):
            raise ConfigError("exit policy key %r is not an exit code" % (code,), option="exit_policy") from None
        if not 0 <= number <= 255:
            raise ConfigError("exit policy key %d is outside 0-255" % number, option="exit_policy")
        if action not in ACTIONS:
            raise ConfigError(
                "exit policy action %r for code %d must be one of %s" % (action, number, ", ".join(ACTIONS)),
                option="exit_policy",
            )
        policy[number] = action
    return policy


def classify_exit_code(rc, policy=None):
    """Return the policy action for ``rc``; codes the policy does not list are fatal.

    A negative ``rc`` (rsync killed by a signal: the OOM killer, an operator) says nothing
    about the EPN, so it is retried like a dropped connection.
    """
    if rc is not None and rc < 0:
        return ACTION_RETRY
    return (DEFAULT_EXIT_POLICY if policy is None else policy).get(rc, ACTION_FATAL)


def resolve_exit_code(rc, attempts, policy=None, max_attempts=DEFAULT_MAX_ATTEMPTS):
    """Decide what to do after a run that exited with ``rc``.

    ``attempts`` counts the runs of this transfer so far, this one included, across
    playbook runs. Returns ``rc``, ``action``, ``meaning`` and ``status``, one of
    success, warning, retry (try again after ``backoff_seconds``), failed (retries used
    up), fatal (configuration must be fixed) or stop (rsync was told to stop).
    """
    _positive_int("max_attempts", max_attempts)
    action = classify_exit_code(rc, policy)
    if action == ACTION_SUCCESS:
        status = STATUS_SUCCESS
    elif action == ACTION_WARN:
        status = STATUS_WARNING
    elif action in (ACTION_RETRY, ACTION_RETRY_ONCE):
        limit = max_attempts if action == ACTION_RETRY else min(2, max_attempts)
        status = STATUS_RETRY if attempts < limit else STATUS_FAILED
    elif action == ACTION_STOP:
        status = STATUS_STOP
    else:
        status = STATUS_FATAL
    return {"rc": rc, "action": action, "meaning": exit_code_meaning(rc), "status": status}


def backoff_seconds(
    attempts,
    initial=DEFAULT_BACKOFF_INITIAL,
    factor=DEFAULT_BACKOFF_FACTOR,
    maximum=DEFAULT_BACKOFF_MAXIMUM,
):
    """Seconds to wait after ``attempts`` failed runs: initial * factor^(attempts-1), capped."""
    if initial < 0 or factor < 1 or maximum < 0:
        raise ConfigError("backoff needs initial >= 0, factor >= 1 and maximum >= 0", option="backoff")
    if attempts <= 0:
        return 0
    delay = initial
    steps = attempts - 1
    # Multiply step by step so huge attempt counts stop at the cap instead of overflowing.
    while steps > 0 and 0 < delay < maximum and factor > 1:
        delay *= factor
        steps -= 1
    return min(delay, maximum)


def _unescape_name(name):
    """Undo rsync's ``\\#ooo`` octal escapes of non-printable bytes in file names."""
    raw = name.encode("utf-8", "surrogateescape")
    raw = _ESCAPE_RE.sub(lambda match: bytes((int(match.group(1), 8),)), raw)
    return raw.decode("utf-8", "surrogateescape")


def parse_itemized_changes(output, marker=CHANGE_MARKER):
    """Return ``[{"flags", "path"}]`` for each itemized line in rsync's stdout.

    With ``marker`` (the default ``--out-format`` prefix) only marked lines count; with
    ``marker=None`` plain ``--itemize-changes`` lines are recognised by their shape.
    Paths are unescaped to the real names, newlines and non-ASCII included.
    """
    changes = []
    for line in output.splitlines():
        if marker is not None:
            if not line.startswith(marker):
                continue
            line = line[len(marker):]
        match = _ITEMIZE_RE.fullmatch(line)
        if match:
            changes.append({"flags": match.group(1).rstrip(), "path": _unescape_name(match.group(2))})
    return changes


def parse_stats(output):
    """Return the ``--stats`` counters in ``output`` as integers, keyed in snake_case."""
    stats = {}
    for match in _STATS_RE.finditer(output):
        key = _STATS_FIELDS.get(match.group("label"))
        if key is not None:
            # Locales group digits with , . ' or spaces; these counters are whole numbers.
            stats[key] = int(re.sub(r"[^0-9]", "", match.group("number")))
    return stats


def check_rsync_version(output):
    """Parse ``rsync --version`` output into version, version_info, protocol and warnings."""
    match = _VERSION_RE.search(output or "")
    if match is None:
        raise RsyncError("cannot read the rsync version from its --version output")
    version_info = (int(match.group("major")), int(match.group("minor")), int(match.group("patch") or 0))
    warnings = []
    if version_info < MINIMUM_SAFE_VERSION:
        warnings.append(
            "rsync %s is older than 3.4.0 and may lack the January 2025 security fixes "
            "(CVE-2024-12084, -12085, -12086, -12087, -12088, -12747); upgrade, or check that "
            "the distribution package carries the backports" % match.group("version")
        )
    protocol = match.group("protocol")
    return {
        "version": match.group("version"),
        "version_info": version_info,
        "protocol": int(protocol) if protocol else None,
        "warnings": warnings,
    }


def tail(text, max_lines=20, max_bytes=4096):
    """Return the last ``max_lines`` lines of ``text``, cut to at most ``max_bytes`` bytes."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = text.splitlines()[-max_lines:] if max_lines > 0 else []
    raw = "\n".join(lines).encode("utf-8", "surrogateescape")
    if len(raw) > max_bytes:
        raw = raw[len(raw) - max_bytes:]
        # Drop a partial UTF-8 character left at the cut.
        raw = raw.lstrip(bytes(range(0x80, 0xC0)))
    return raw.decode("utf-8", "surrogateescape")
