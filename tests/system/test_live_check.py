# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make live-check` (tests/live): its skip path, and its playbook pointed at the API emulator.

The build machines cannot reach Globus, so this runs the very script and playbook a user runs
against the real service, with the SDK's service URLs aimed at the emulator instead.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import uuid

import pytest

from globus_setup import DST, SECRET, SRC, client_env

LIVE_CHECK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "live", "live_check.py")
FILES = ["file1.txt", "file2.txt", "file3.txt"]


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()


def live_check(env, tmp_path):
    """Run the script with only these Globus settings; its work directory goes under tmp_path."""
    clean = dict((k, v) for k, v in os.environ.items() if not k.startswith(("GLOBUS_", "SCIDATA_LIVE_")))
    process = subprocess.run([sys.executable, LIVE_CHECK], env=dict(clean, TMPDIR=str(tmp_path), **env),
                             capture_output=True, text=True, timeout=600, check=False)
    return process.returncode, process.stdout + process.stderr


def test_without_credentials_it_skips_and_says_what_is_missing(emulator, tmp_path):
    code, output = live_check({"SCIDATA_LIVE_SOURCE": SRC}, tmp_path)
    assert code == 0, output
    assert output.startswith("SKIPPED:")
    for name in ("GLOBUS_CLIENT_ID", "GLOBUS_CLIENT_SECRET", "SCIDATA_LIVE_DESTINATION"):
        assert name in output
    assert "  SCIDATA_LIVE_SOURCE " not in output  # it was given
    assert emulator.requests() == []


def test_the_live_playbook_passes_against_the_emulator(emulator, tmp_path):
    name = "live" + uuid.uuid4().hex[:8]
    source_dir = emulator.root / "src" / name / "godata"
    source_dir.mkdir(parents=True)
    for number, file_name in enumerate(FILES):
        (source_dir / file_name).write_bytes(os.urandom(100 + number))
    env = dict(client_env(emulator), SCIDATA_LIVE_SOURCE=SRC, SCIDATA_LIVE_DESTINATION=DST,
               SCIDATA_LIVE_SOURCE_PATH="/%s/godata" % name, SCIDATA_LIVE_DESTINATION_PATH="/~/%s" % name,
               SCIDATA_LIVE_SOURCE_DIR=str(source_dir), SCIDATA_LIVE_POLL_SECONDS="1")
    code, output = live_check(env, tmp_path)
    assert code == 0, output[-5000:]
    assert "live check passed" in output and SECRET not in output
    assert os.listdir(str(tmp_path)) == []  # its work directory is removed once it passed
    [run] = glob.glob(str(emulator.root / "dst" / name / "run-*"))
    for part in ("transfer", "tree"):
        for file_name in FILES:
            with open(os.path.join(run, part, file_name), "rb") as copy:
                assert copy.read() == (source_dir / file_name).read_bytes(), (part, file_name)
    sent = sorted(item["source_path"] for task in emulator.tasks() for item in task["items"])
    assert sent == sorted(["/%s/godata/%s" % (name, f) for f in FILES] * 2)  # once per module


def test_an_unreachable_collection_fails_the_check(emulator, tmp_path):
    env = dict(client_env(emulator), SCIDATA_LIVE_SOURCE="0d3a9a3e-0000-4000-8000-0000000000ff",
               SCIDATA_LIVE_DESTINATION=DST, SCIDATA_LIVE_DATA_ACCESS="", SCIDATA_LIVE_POLL_SECONDS="1")
    code, output = live_check(env, tmp_path)
    assert code != 0 and "live check FAILED" in output
    assert emulator.tasks() == []
    kept = output.rsplit("work directory is kept in ", 1)[1].strip()
    assert os.path.dirname(kept) == str(tmp_path) and os.path.isfile(os.path.join(kept, "variables.json"))
