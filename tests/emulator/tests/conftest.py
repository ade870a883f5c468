# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures for the emulator fidelity tests.

One emulator process serves the whole session (started through ``harness.EmulatorProcess`` on a
random port, with collections mapped to temporary directories); every test starts from a reset
emulator, default limits and empty collection directories.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

EMULATOR_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, EMULATOR_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from emu_support import (CLIENT_ID, CLIENT_SECRET, DEFAULT_SETTINGS, DST_ID, GUARD_ID, NATIVE_ID,  # noqa: E402
                         OTHER_ID, OTHER_SECRET, SRC_ID, make_client)
from globus_emulator.harness import EmulatorProcess  # noqa: E402


def emulator_config(roots):
    return {
        "collections": [
            {"id": SRC_ID, "display_name": "Emulated source", "root": str(roots["src"]),
             "entity_type": "GCSv5_mapped_collection", "requires_data_access_consent": False,
             "owner_string": "src-admin@globusid.org"},
            {"id": DST_ID, "display_name": "Emulated destination", "root": str(roots["dst"]),
             "entity_type": "GCSv5_guest_collection", "requires_data_access_consent": False,
             "owner_string": "dst-admin@globusid.org"},
            {"id": GUARD_ID, "display_name": "Consent-guarded mapped collection", "root": str(roots["guarded"]),
             "entity_type": "GCSv5_mapped_collection", "requires_data_access_consent": True,
             "owner_string": "hpc-admin@globusid.org"},
        ],
        "clients": [
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "identity": "replication-bot"},
            {"client_id": OTHER_ID, "client_secret": OTHER_SECRET, "identity": "someone-else"},
        ],
        "native_clients": [{"client_id": NATIVE_ID}],
        "users": [{"username": "researcher@globusid.org"}],
        "limits": DEFAULT_SETTINGS["limits"],
        "transfer_rate_bytes_per_second": None,
        "progress_interval_seconds": DEFAULT_SETTINGS["progress_interval_seconds"],
    }


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    base = tmp_path_factory.mktemp("globus-emulator")
    roots = {name: base / name for name in ("src", "dst", "guarded")}
    for path in roots.values():
        path.mkdir()
    emu = EmulatorProcess(emulator_config(roots), str(base / "work")).start()
    emu.roots = roots
    patch = pytest.MonkeyPatch()
    for key, value in emu.env.items():
        patch.setenv(key, value)
    yield emu
    patch.undo()
    assert emu.stop() == 0, emu.log_tail()


@pytest.fixture(autouse=True)
def fresh(emulator):
    emulator.reset()
    emulator.configure(**DEFAULT_SETTINGS)
    for root in emulator.roots.values():
        for entry in os.listdir(root):
            path = os.path.join(root, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    yield


@pytest.fixture
def src(emulator):
    return emulator.roots["src"]


@pytest.fixture
def dst(emulator):
    return emulator.roots["dst"]


@pytest.fixture
def tc(emulator):
    """A TransferClient for the replication client, consented to the guarded collection."""
    return make_client()
