# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""rsync's extra arguments against the allowlist, the self-contained ssh, and the data modes
(the modes through a real rsync run)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from ansible_collections.scidata.replication.plugins.module_utils._errors import ConfigError
from ansible_collections.scidata.replication.plugins.module_utils._rsync import (
    RSYNC_ENVIRONMENT,
    build_rsync_argv,
    build_ssh_command,
)


@pytest.mark.parametrize("extra", [
    "--no-s", "--no-secluded-args", "--no-protect-args", "--no-protect", "--old-args", "--old-d",
    "--rsh=sh", "--rs=sh", "-e", "-esh", "-e sh", "--e=sh", "--delete", "--remove-source-files", "--iconv=latin1",
    "--human-readable", "--info=progress2", "--copy-links", "--checksum=yes", "--exclude", "--exclude=",
    "--max-size=1G\n--rsh=sh", "--", "", "--chmod=777",
])
def test_extra_args_outside_the_allowlist_are_refused(extra):
    with pytest.raises(ConfigError) as caught:
        build_rsync_argv("u@h:/src/", "/dst/", extra_args=[extra])
    assert caught.value.details["option"] == "extra_args"


def test_allowed_extra_args_pass_in_order_before_the_paths():
    extra = ["--checksum", "--exclude=*.tmp", "--max-size=10G", "--rsync-path=/opt/rsync/bin/rsync"]
    argv = build_rsync_argv("u@h:/src/", "/dst/", extra_args=extra)
    assert argv[-7:] == extra + ["--", "u@h:/src/", "/dst/"]


def test_ssh_reads_no_config_and_offers_only_the_key():
    words = build_ssh_command(key_file="/k/id", known_hosts_file="/k/known_hosts").split(" ")
    assert words[1:3] == ["'-F'", "'/dev/null'"]
    assert "'IdentitiesOnly=yes'" in words and "'GlobalKnownHostsFile=/dev/null'" in words
    plain = build_ssh_command()
    assert "IdentitiesOnly" not in plain and "GlobalKnownHostsFile" not in plain and "'-F' '/dev/null'" in plain


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_data_modes_are_group_shared_and_closed_to_others(tmp_path):
    source = tmp_path / "src"
    (source / "raw" / "deep").mkdir(parents=True)
    for path, mode in (("raw/deep", 0o755), ("raw", 0o700), ("raw/deep/img.cbf", 0o644), ("run.sh", 0o755),
                       ("notes.txt", 0o600)):
        target = source / path
        if not target.exists():
            target.write_bytes(b"x")
        os.chmod(str(target), mode)
    argv = build_rsync_argv(str(source) + "/", str(tmp_path / "dst") + "/")
    result = subprocess.run(argv, env=dict(os.environ, **RSYNC_ENVIRONMENT), capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    modes = {}
    for directory, dirnames, filenames in os.walk(str(tmp_path / "dst")):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            modes[os.path.relpath(path, str(tmp_path / "dst"))] = stat.S_IMODE(os.stat(path).st_mode)
    assert modes == {"raw": 0o2770, "raw/deep": 0o2770, "raw/deep/img.cbf": 0o660, "run.sh": 0o770,
                     "notes.txt": 0o660}
    assert stat.S_IMODE(os.stat(str(tmp_path / "dst")).st_mode) == 0o2770
