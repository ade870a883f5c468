# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Globus world the tests use: collections mapped to local directories and two apps."""

from __future__ import annotations

import os

SRC = "0d3a9a3e-0000-4000-8000-00000000a001"
DST = "0d3a9a3e-0000-4000-8000-00000000a002"
DST2 = "0d3a9a3e-0000-4000-8000-00000000a004"
CONSENT = "0d3a9a3e-0000-4000-8000-00000000a003"
CONFIDENTIAL = "5a1b2c3d-0000-4000-8000-0000000000c1"
SECRET = "s3cr3t-client-value-7f1e"
NATIVE = "5a1b2c3d-0000-4000-8000-0000000000e1"

COLLECTIONS = (("src", SRC, "Source"), ("dst", DST, "Replica"), ("dst2", DST2, "Second replica"),
               ("consent", CONSENT, "Needs consent"))


def emulator_config(root):
    """Emulator configuration with one directory per collection under ``root``."""
    collections = []
    for name, collection_id, display_name in COLLECTIONS:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        collections.append({"id": collection_id, "display_name": display_name, "root": os.path.join(root, name),
                            "entity_type": "GCSv5_mapped_collection",
                            "requires_data_access_consent": name == "consent"})
    return {
        "collections": collections,
        "clients": [{"client_id": CONFIDENTIAL, "client_secret": SECRET, "identity": "replicator@example.org"}],
        "native_clients": [{"client_id": NATIVE}],
    }


def client_env(emulator):
    """What a module's environment needs for client-credentials access to the emulator."""
    return dict(emulator.env, GLOBUS_CLIENT_ID=CONFIDENTIAL, GLOBUS_CLIENT_SECRET=SECRET)
