# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""Tests for the rsync core: argv and ssh command building checked by running the real
rsync on hostile file names, the exit-code policy, backoff, and the output parsers fed
with output rsync really produced."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError, RsyncError
from ansible_collections.scidata.replication.plugins.module_utils._rsync import (
    DEFAULT_EXIT_POLICY,
    RSYNC_ENVIRONMENT,
    backoff_seconds,
    build_exit_policy,
    build_rsync_argv,
    build_ssh_command,
    check_rsync_version,
    classify_exit_code,
    parse_itemized_changes,
    parse_stats,
    remote_source,
    resolve_exit_code,
    tail,
)

RSYNC = shutil.which("rsync") or "/usr/bin/rsync"
needs_rsync = pytest.mark.skipif(not os.path.exists(RSYNC), reason="rsync is not installed")

# Names that break shells, option parsers or naive line-based parsing.
HOSTILE_NAMES = [
    "a b",
    "new\nline",
    "-rf",
    "-e sh",
    "$(touch pwned)",
    "`touch pwned`",
    "semi;colon&amp|pipe",
    "quote'double\"",
    "back\\slash",
    "esc\\#012aped",
    "tab\tname",
    "ünïcødé ☃",
    "glob*?[x]",
    " leading space",
]

# A remote shell that behaves like sshd: it drops "-l user" and the host, then hands the
# rest to sh -c joined by spaces, so anything rsync fails to protect is interpreted.
FAKE_REMOTE_SHELL = """#!/bin/sh
while [ "$#" -gt 0 ]; do
  case "$1" in
    -l) shift 2 ;;
    *) break ;;
  esac
done
shift
exec /bin/sh -c "$*"
"""

ARGV_DUMPING_SSH = """#!/bin/sh
for arg in "$@"; do printf '%s\\0' "$arg"; done > "$ARGV_DUMP"
exit 255
"""


def _run(argv, cwd):
    env = dict(os.environ, **RSYNC_ENVIRONMENT)
    argv = [RSYNC] + argv[1:]
    return subprocess.run(
        argv, cwd=str(cwd), env=env, capture_output=True, text=True, errors="surrogateescape", timeout=20, check=False,
    )


def _tree(root):
    """Map every relative path under ``root`` to its bytes (None for directories)."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(directory, name), root)] = None
        for name in filenames:
            with open(os.path.join(directory, name), "rb") as handle:
                found[os.path.relpath(os.path.join(directory, name), root)] = handle.read()
    return found


def _make_hostile_tree(root):
    os.makedirs(os.path.join(root, "--rsh=sh -c x", "new\ndir"))
    for index, name in enumerate(HOSTILE_NAMES):
        with open(os.path.join(root, name), "wb") as handle:
            handle.write(("content %d of %r\n" % (index, name)).encode("utf-8"))
        with open(os.path.join(root, "--rsh=sh -c x", "new\ndir", name), "wb") as handle:
            handle.write(b"nested " + name.encode("utf-8"))


def _script(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def _no_pwned(*roots):
    for root in roots:
        for _directory, _dirnames, filenames in os.walk(str(root)):
            assert "pwned" not in filenames


# --- argv and ssh command -------------------------------------------------------------

def test_argv_default_options_and_paths_last():
    argv = build_rsync_argv(remote_source("sync", "sftp.example.org", "/data/MX1/12345a/"), "/srv/p/12345a/data/")
    assert argv == [
        "rsync",
        "--recursive",
        "--times",
        "--perms",
        "--chmod=D2770,Fug+rwX,Fo-rwx",
        "--size-only",
        "--stats",
        "--out-format=<<CHANGED>>%i %n",
        "--include=.info",
        "--exclude=.*",
        "--partial-dir=.rsync-partial",
        "--protect-args",
        "--timeout=300",
        "--",
        "sync@sftp.example.org:/data/MX1/12345a/",
        "/srv/p/12345a/data/",
    ]
    # mxsync's "-stats" typo must not come back: every option is a long option.
    assert not [arg for arg in argv[1:-3] if not arg.startswith("--")]


def test_check_mode_only_adds_dry_run_and_itemize():
    options = dict(ssh_command=build_ssh_command(), compress=True, bwlimit="10M", extra_args=["--checksum"])
    live = build_rsync_argv("u@h:/src/", "/dst/", **options)
    check = build_rsync_argv("u@h:/src/", "/dst/", check_mode=True, **options)
    assert [arg for arg in check if arg not in ("--dry-run", "--itemize-changes")] == live
    assert len(check) == len(live) + 2
    assert live[-3:] == ["--", "u@h:/src/", "/dst/"]
    assert {"--compress", "--bwlimit=10M", "--checksum"} <= set(live)


def test_optional_settings():
    argv = build_rsync_argv("/src/", "/dst/", timeout=None, protect_args=False, partial_dir="/var/tmp/part")
    assert not [arg for arg in argv if arg.startswith("--timeout")]
    assert "--protect-args" not in argv
    assert "--partial-dir=/var/tmp/part" in argv
    assert "--timeout=0" in build_rsync_argv("/src/", "/dst/", timeout=0)


@pytest.mark.parametrize("source, destination", [
    ("/src/", "relative/dst"),
    ("relative/src", "/dst/"),
    ("host::module/x", "/dst/"),
    ("rsync://host/module/", "/dst/"),
    ("u@h:relative/path", "/dst/"),
    ("u@-oProxyCommand=x:/p", "/dst/"),
    ("-l@h:/p", "/dst/"),
    ("u@h:/data/*", "/dst/"),
    ("", "/dst/"),
])
def test_argv_refuses_unsafe_paths(source, destination):
    with pytest.raises(ConfigError):
        build_rsync_argv(source, destination)


@pytest.mark.parametrize("extra", [["-e sh"], ["-avz"], ["--rsh=sh"], ["--old-args"], ["--no-protect-args"], ["--"], [3]])
def test_argv_refuses_unsafe_extra_args(extra):
    with pytest.raises(ConfigError):
        build_rsync_argv("/src/", "/dst/", extra_args=extra)


@pytest.mark.parametrize("option, value", [("bwlimit", "10; rm"), ("bwlimit", True), ("timeout", -1), ("timeout", "60")])
def test_argv_refuses_bad_option_values(option, value):
    with pytest.raises(ConfigError):
        build_rsync_argv("/src/", "/dst/", **{option: value})


def test_remote_path_with_newline_needs_protect_args():
    source = remote_source("u", "h", "/data/new\nline/")
    assert build_rsync_argv(source, "/dst/")[-2] == source
    with pytest.raises(ConfigError, match="protect_args"):
        build_rsync_argv(source, "/dst/", protect_args=False)


def test_remote_source_accepts_facility_logins():
    # mxsync's remote user was an e-mail address; rsync splits at the last "@".
    assert remote_source("help@massive.org.au", "sftp.synchrotron.org.au", "/data/MX1/1/") == \
        "help@massive.org.au@sftp.synchrotron.org.au:/data/MX1/1/"
    assert remote_source("u", "[2001:db8::1]", "/d/") == "u@[2001:db8::1]:/d/"


def test_ssh_command_exact():
    assert build_ssh_command(
        port=2222, key_file="/etc/sync/id_ed25519", known_hosts_file="/etc/sync/known_hosts",
        connect_timeout=10, server_alive_interval=5, server_alive_count_max=3,
    ) == (
        "'ssh' '-F' '/dev/null' '-p' '2222' '-i' '/etc/sync/id_ed25519' '-o' 'IdentitiesOnly=yes' "
        "'-o' 'BatchMode=yes' '-o' 'StrictHostKeyChecking=yes' '-o' 'UserKnownHostsFile=/etc/sync/known_hosts' "
        "'-o' 'GlobalKnownHostsFile=/dev/null' '-o' 'ConnectTimeout=10' '-o' 'ServerAliveInterval=5' "
        "'-o' 'ServerAliveCountMax=3'"
    )


@pytest.mark.parametrize("kwargs", [
    {"key_file": "/keys/my key"},
    {"key_file": "/keys/it's"},
    {"key_file": '/keys/"k"'},
    {"key_file": "/keys/%h"},
    {"key_file": "relative/key"},
    {"known_hosts_file": "/k/hosts\n-oProxyCommand=x"},
    {"ssh_path": "ssh -oProxyCommand=x"},
    {"port": 0},
    {"port": 70000},
    {"port": "22"},
    {"connect_timeout": 0},
    {"server_alive_count_max": True},
])
def test_ssh_command_refuses_values_that_could_break_it(kwargs):
    with pytest.raises(ConfigError):
        build_ssh_command(**kwargs)


@needs_rsync
def test_ssh_command_reaches_ssh_as_intended(tmp_path):
    """rsync's own -e splitting turns the command back into exactly these ssh arguments."""
    fake_ssh = _script(tmp_path / "fake-ssh", ARGV_DUMPING_SSH)
    dump = tmp_path / "argv"
    ssh_command = build_ssh_command(
        port=2222, key_file="/etc/sync/id_ed25519", known_hosts_file="/etc/sync/known_hosts", ssh_path=fake_ssh,
    )
    argv = build_rsync_argv(remote_source("help@massive.org.au", "sftp.example.org", "/data/MX1/1a/"),
                            str(tmp_path / "dst") + "/", ssh_command=ssh_command)
    env = dict(os.environ, ARGV_DUMP=str(dump), **RSYNC_ENVIRONMENT)
    result = subprocess.run([RSYNC] + argv[1:], env=env, capture_output=True, text=True, timeout=60, check=False)
    # The stand-in exits like a failed ssh; rsync reports that as 12 or 255.
    assert result.returncode in (12, 255)
    ssh_argv = dump.read_bytes().decode().split("\0")[:-1]
    assert ssh_argv[:24] == [
        "-F", "/dev/null", "-p", "2222", "-i", "/etc/sync/id_ed25519", "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=/etc/sync/known_hosts", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
        "-l", "help@massive.org.au",
    ]
    assert ssh_argv[24] == "sftp.example.org"
    assert ssh_argv[25:27] == ["rsync", "--server"]


# --- real transfers of hostile names --------------------------------------------------

@needs_rsync
def test_local_transfer_of_hostile_names_is_byte_identical(tmp_path):
    source = tmp_path / "src $(touch pwned) ünï\nx"
    destination = tmp_path / "-dst `touch pwned`"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    _make_hostile_tree(str(source))

    result = _run(build_rsync_argv(str(source) + "/", str(destination) + "/"), workdir)

    assert result.returncode == 0, result.stderr
    assert _tree(str(destination)) == _tree(str(source))
    _no_pwned(tmp_path)
    changed = {change["path"] for change in parse_itemized_changes(result.stdout)}
    # Every file, escaped newlines, backslashes and non-ASCII included, comes back verbatim.
    assert set(HOSTILE_NAMES) <= changed
    assert os.path.join("--rsh=sh -c x", "new\ndir", "$(touch pwned)") in changed


@needs_rsync
@pytest.mark.parametrize("protect_args", [True, False])
def test_remote_transfer_through_a_shell_keeps_hostile_names_verbatim(tmp_path, protect_args):
    fake_shell = _script(tmp_path / "fake-remote-shell", FAKE_REMOTE_SHELL)
    # Without protect_args a newline cannot be protected (the builder refuses it), so the
    # root's newline is only tested with protection on.
    root_name = "src $(touch pwned) `touch pwned` ünï;" + ("\nnl" if protect_args else "")
    source = tmp_path / root_name
    destination = tmp_path / "dst"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    _make_hostile_tree(str(source))

    argv = build_rsync_argv(
        remote_source("help@massive.org.au", "localhost", str(source) + "/"),
        str(destination) + "/",
        ssh_command="'%s'" % fake_shell,
        protect_args=protect_args,
    )
    result = _run(argv, workdir)

    assert result.returncode == 0, result.stderr
    assert _tree(str(destination)) == _tree(str(source))
    _no_pwned(tmp_path)


@needs_rsync
def test_fake_remote_shell_would_expose_injection(tmp_path):
    """Control for the test above: with --old-args the same path is run by the shell."""
    fake_shell = _script(tmp_path / "fake-remote-shell", FAKE_REMOTE_SHELL)
    # The trailing "x" keeps the split-off argument from naming the root directory.
    source = tmp_path / "src $(touch pwned)x"
    source.mkdir()
    (source / "f").write_text("x")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    argv = build_rsync_argv(remote_source("u", "localhost", str(source) + "/"), str(tmp_path / "dst") + "/",
                            ssh_command="'%s'" % fake_shell, protect_args=False)
    argv.insert(argv.index("--"), "--old-args")

    result = _run(argv, workdir)

    assert result.returncode != 0
    assert (workdir / "pwned").exists()


@needs_rsync
def test_dotfiles_skipped_except_info(tmp_path):
    source = tmp_path / "src"
    (source / ".hidden-dir").mkdir(parents=True)
    (source / ".hidden-dir" / "f").write_text("x")
    (source / ".info").write_text("beamline info")
    (source / ".secret").write_text("x")
    (source / "frame_0001.h5").write_text("data")

    result = _run(build_rsync_argv(str(source) + "/", str(tmp_path / "dst") + "/"), tmp_path)

    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(str(tmp_path / "dst"))) == [".info", "frame_0001.h5"]


@needs_rsync
def test_chmod_applies_mxsync_permissions(tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f").write_text("x")
    os.chmod(str(source / "sub" / "f"), 0o647)

    result = _run(build_rsync_argv(str(source) + "/", str(tmp_path / "dst") + "/"), tmp_path)

    assert result.returncode == 0, result.stderr
    # ug+rw, and ug+X because the file has an execute bit; nothing for others.
    assert stat.S_IMODE(os.stat(str(tmp_path / "dst" / "sub" / "f")).st_mode) == 0o770
    assert stat.S_IMODE(os.stat(str(tmp_path / "dst" / "sub")).st_mode) == 0o2770


# --- output parsers on real rsync output ----------------------------------------------

@needs_rsync
def test_stats_and_changes_from_real_runs(tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    sizes = {"sub/big.h5": 1500000, "small": 10, "new\nline": 3}
    for name, size in sizes.items():
        (source / name).write_bytes(b"x" * size)
    destination = str(tmp_path / "dst") + "/"

    check = _run(build_rsync_argv(str(source) + "/", destination, check_mode=True), tmp_path)
    assert check.returncode == 0, check.stderr
    assert not os.path.exists(destination)
    planned = parse_itemized_changes(check.stdout)
    assert {c["path"] for c in planned} == {"./", "sub/", "sub/big.h5", "small", "new\nline"}
    assert {c["flags"] for c in planned if c["path"] == "small"} == {">f+++++++++"}

    live = _run(build_rsync_argv(str(source) + "/", destination), tmp_path)
    assert live.returncode == 0, live.stderr
    assert "1,500,013" in live.stdout  # the grouped form the parser has to read
    stats = parse_stats(live.stdout)
    assert stats["regular_files_transferred"] == 3
    assert stats["total_transferred_file_size"] == sum(sizes.values())
    assert stats["total_file_size"] == sum(sizes.values())
    assert stats["number_of_files"] == 5
    assert stats["total_bytes_sent"] > 1500000
    assert stats["total_bytes_received"] > 0
    assert {c["path"] for c in parse_itemized_changes(live.stdout)} == {c["path"] for c in planned}

    again = _run(build_rsync_argv(str(source) + "/", destination, check_mode=True), tmp_path)
    assert parse_itemized_changes(again.stdout) == []
    assert parse_stats(again.stdout)["regular_files_transferred"] == 0

    (source / "small").write_bytes(b"y" * 11)
    changed = _run(build_rsync_argv(str(source) + "/", destination, check_mode=True), tmp_path)
    assert [c["path"] for c in parse_itemized_changes(changed.stdout)] == ["small"]


def test_parse_itemized_changes_unescapes_and_ignores_other_lines():
    output = "\n".join([
        "<<CHANGED>>>f+++++++++ new\\#012line",
        "<<CHANGED>>>f.st...... \\#303\\#274n\\#303\\#257",
        "<<CHANGED>>>f+++++++++ x\\#134#012y",
        "<<CHANGED>>>f+++++++++ back\\#slash",
        "<<CHANGED>>*deleting   gone file",
        "<<CHANGED>>cd+++++++++ dir/",
        ">f+++++++++ not-marked",
        "Number of files: 3",
        "rsync: [sender] some error",
    ])
    assert parse_itemized_changes(output) == [
        {"flags": ">f+++++++++", "path": "new\nline"},
        {"flags": ">f.st......", "path": "ünï"},
        {"flags": ">f+++++++++", "path": "x\\#012y"},
        {"flags": ">f+++++++++", "path": "back\\#slash"},
        {"flags": "*deleting", "path": "gone file"},
        {"flags": "cd+++++++++", "path": "dir/"},
    ]
    assert parse_itemized_changes(">f+++++++++ a b\nsent 10 bytes\n", marker=None) == [
        {"flags": ">f+++++++++", "path": "a b"}
    ]


def test_parse_stats_number_formats():
    assert parse_stats(
        "Number of files: 1.234.567 (reg: 1.000.000, dir: 234.567)\n"
        "Number of files transferred: 12\n"
        "Total transferred file size: 9'876 bytes\n"
        "File list generation time: 0.001 seconds\n"
    ) == {"number_of_files": 1234567, "regular_files_transferred": 12, "total_transferred_file_size": 9876}
    assert parse_stats("rsync error: some files/attrs were not transferred (code 23)") == {}


# --- version --------------------------------------------------------------------------

@needs_rsync
def test_version_of_installed_rsync():
    output = subprocess.run([RSYNC, "--version"], capture_output=True, text=True, check=True).stdout
    info = check_rsync_version(output)
    assert info["version"] == output.split()[2].lstrip("v")
    assert info["protocol"] >= 30
    assert bool(info["warnings"]) == (info["version_info"] < (3, 4, 0))


@pytest.mark.parametrize("output, version_info, protocol, warns", [
    ("rsync  version 3.2.7  protocol version 31\nCopyright ...", (3, 2, 7), 31, True),
    ("rsync  version v3.1.3  protocol version 31", (3, 1, 3), 31, True),
    ("rsync  version 3.3.0  protocol version 31", (3, 3, 0), 31, True),
    ("rsync  version 3.4.0  protocol version 32", (3, 4, 0), 32, False),
    ("rsync  version 3.4.1  protocol version 32", (3, 4, 1), 32, False),
    ("rsync version 4.0  protocol version 33", (4, 0, 0), 33, False),
])
def test_version_warning_below_3_4_0(output, version_info, protocol, warns):
    info = check_rsync_version(output)
    assert (info["version_info"], info["protocol"]) == (version_info, protocol)
    assert bool(info["warnings"]) == warns
    if warns:
        assert "3.4.0" in info["warnings"][0] and "CVE-2024-12084" in info["warnings"][0]


def test_version_unreadable():
    with pytest.raises(RsyncError):
        check_rsync_version("openrsync: protocol version 29")


# --- exit-code policy and backoff -----------------------------------------------------

@pytest.mark.parametrize("codes, action", [
    ((0,), "success"),
    ((5, 10, 12, 30, 35, 255), "retry"),
    ((11, 14, 21, 22, 23), "retry_once"),
    ((24,), "warn"),
    ((1, 2, 3, 4, 13, 25), "fatal"),
    ((20,), "stop"),
    ((6, 15, 99, 127), "fatal"),
])
def test_default_policy_table(codes, action):
    for code in codes:
        assert classify_exit_code(code) == action
        assert classify_exit_code(code, build_exit_policy()) == action


def test_policy_overrides():
    policy = build_exit_policy({"23": "retry", 24: "fatal", "99": "warn"})
    assert (policy[23], policy[24], policy[99]) == ("retry", "fatal", "warn")
    assert policy[30] == DEFAULT_EXIT_POLICY[30]
    assert classify_exit_code(24, policy) == "fatal"
    assert DEFAULT_EXIT_POLICY[24] == "warn"  # overriding never edits the defaults


@pytest.mark.parametrize("overrides", [{"x": "retry"}, {256: "retry"}, {23: "sometimes"}, {None: "retry"}])
def test_policy_override_errors(overrides):
    with pytest.raises(ConfigError):
        build_exit_policy(overrides)


def test_resolve_retry_until_max_attempts():
    statuses = [resolve_exit_code(30, attempt, max_attempts=4)["status"] for attempt in range(1, 6)]
    assert statuses == ["retry", "retry", "retry", "failed", "failed"]
    result = resolve_exit_code(30, 1)
    assert result == {"rc": 30, "action": "retry", "meaning": "timeout in data send/receive", "status": "retry"}


def test_resolve_retry_once_then_report():
    assert resolve_exit_code(23, 1)["status"] == "retry"
    assert resolve_exit_code(23, 2)["status"] == "failed"
    assert resolve_exit_code(23, 1, max_attempts=1)["status"] == "failed"


@pytest.mark.parametrize("rc, status", [(0, "success"), (24, "warning"), (20, "stop"), (1, "fatal"), (42, "fatal")])
def test_resolve_other_statuses(rc, status):
    assert resolve_exit_code(rc, 1)["status"] == status


def test_resolve_with_user_policy():
    policy = build_exit_policy({24: "retry"})
    assert resolve_exit_code(24, 1, policy=policy)["status"] == "retry"


def test_backoff_exponential_with_cap():
    assert [backoff_seconds(n, initial=60, factor=2, maximum=600) for n in range(0, 7)] == [0, 60, 120, 240, 480, 600, 600]
    assert backoff_seconds(10 ** 6, initial=60, factor=2, maximum=3600) == 3600
    assert backoff_seconds(3, initial=10, factor=1, maximum=100) == 10
    assert backoff_seconds(10 ** 12, initial=10, factor=1, maximum=100) == 10
    assert backoff_seconds(10 ** 12, initial=0) == 0


@pytest.mark.parametrize("kwargs", [{"initial": -1}, {"factor": 0.5}, {"maximum": -5}])
def test_backoff_refuses_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        backoff_seconds(1, **kwargs)


# --- tail -----------------------------------------------------------------------------

def test_tail_lines_and_bytes():
    text = "\n".join("line %d" % n for n in range(100))
    assert tail(text, max_lines=3) == "line 97\nline 98\nline 99"
    assert tail(text, max_lines=3, max_bytes=10) == "98\nline 99"
    assert tail(b"x\ny\n", max_lines=5) == "x\ny"
    assert tail("", max_lines=5) == ""


def test_tail_never_splits_a_character():
    result = tail("ééééé", max_lines=1, max_bytes=5)
    assert result == "éé"
    assert len(result.encode("utf-8")) <= 5
