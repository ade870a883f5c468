# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The command line and the harness: port file, clean shutdown, supported Python versions."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import globus_sdk
import pytest
from emu_support import CLIENT_ID, CLIENT_SECRET, DST_ID, SRC_ID, make_client, tree, write
from globus_emulator.harness import EmulatorError, EmulatorProcess


def interpreters():
    found = {sys.executable}
    for name in ("python3.11", "python3.12"):
        path = shutil.which(name)
        if path:
            try:
                subprocess.run([path, "-c", "import sys; assert sys.version_info >= (3, 11)"], check=True,
                               capture_output=True, timeout=30)
            except (subprocess.SubprocessError, OSError):
                continue
            found.add(path)
    return sorted(found)


@pytest.mark.parametrize("python", interpreters(), ids=lambda p: subprocess.run(
    [p, "-c", "import sys; print('py%d.%d' % sys.version_info[:2])"], capture_output=True, text=True,
    check=True).stdout.strip())
def test_cli_serves_a_transfer_and_stops_cleanly(tmp_path, monkeypatch, python):
    """Run the server under each available interpreter (3.11 and 3.12) and move a file through it."""
    roots = {name: tmp_path / name for name in ("a", "b")}
    for path in roots.values():
        path.mkdir()
    config = {"collections": [{"id": SRC_ID, "root": str(roots["a"])}, {"id": DST_ID, "root": str(roots["b"])}],
              "clients": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}]}
    emu = EmulatorProcess(config, str(tmp_path / "work"), python=python).start()
    try:
        assert emu.port > 0
        assert (tmp_path / "work" / "emulator.port").read_text().strip() == str(emu.port)
        assert emu.admin("GET", "/_emulator/health")["collections"] == sorted([SRC_ID, DST_ID])
        assert emu.env == {"GLOBUS_SDK_SERVICE_URL_TRANSFER": f"http://127.0.0.1:{emu.port}/",
                           "GLOBUS_SDK_SERVICE_URL_AUTH": f"http://127.0.0.1:{emu.port}/"}
        for key, value in emu.env.items():
            monkeypatch.setenv(key, value)
        tc = make_client(consents=())
        write(roots["a"], "f.txt", "through " + python)
        data = globus_sdk.TransferData(SRC_ID, DST_ID)
        data.add_item("/f.txt", "/f.txt")
        task_id = tc.submit_transfer(data)["task_id"]
        emu.wait_idle()
        assert tc.get_task(task_id)["status"] == "SUCCEEDED" and tree(roots["b"]) == {"f.txt"}
    finally:
        assert emu.stop() == 0, emu.log_tail()


def test_sigint_also_stops_cleanly(tmp_path):
    config = {"collections": [], "clients": []}
    emu = EmulatorProcess(config, str(tmp_path)).start()
    emu.process.send_signal(signal.SIGINT)
    assert emu.process.wait(10) == 0
    emu.stop()


def test_harness_reports_a_broken_config(tmp_path):
    emu = EmulatorProcess({"collections": [{"id": "not-a-uuid", "root": "/tmp"}]}, str(tmp_path))
    with pytest.raises(EmulatorError, match="exited"):
        emu.start(timeout=20)
