# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Constants and helpers shared by the emulator tests (ids, clients, file setup, waiting)."""

from __future__ import annotations

import os
import time

import globus_sdk

SRC_ID = "0b1c5a6e-5a3e-4c0f-9d0b-6a3a2f0c1a11"
DST_ID = "4f6a2d71-8c1e-4a9b-b3d2-9e2c7b5d2b22"
GUARD_ID = "9a7d3e55-21c4-4e8a-8f6b-1c2d3e4f5a33"
CLIENT_ID = "7d2a1f0e-3b4c-4d5e-8f90-a1b2c3d4e5f6"
CLIENT_SECRET = "emulator-secret"
OTHER_ID = "1e2d3c4b-5a69-4788-97a6-b5c4d3e2f1a0"
OTHER_SECRET = "other-secret"
NATIVE_ID = "c0ffee00-1234-4abc-9def-0123456789ab"
TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"
TRANSFER_RS = "transfer.api.globus.org"

DEFAULT_SETTINGS = {
    "limits": {"max_active_tasks": 3, "max_pending_tasks": 100, "requests_per_second": 1000,
               "rate_window_seconds": 1},
    "transfer_rate_bytes_per_second": None,
    "progress_interval_seconds": 0.2,
    "marker_page_size": 1000,
    "token_lifetime_seconds": 172800,
}


def data_access(collection_id):
    return f"https://auth.globus.org/scopes/{collection_id}/data_access"


def transfer_scope(*consented):
    if not consented:
        return TRANSFER_SCOPE
    return TRANSFER_SCOPE + "[" + " ".join("*" + data_access(c) for c in consented) + "]"


def make_client(client_id=CLIENT_ID, secret=CLIENT_SECRET, consents=(GUARD_ID,)):
    """TransferClient authorized by client credentials, exactly as the collection's modules do it."""
    auth_client = globus_sdk.ConfidentialAppAuthClient(client_id, secret)
    authorizer = globus_sdk.ClientCredentialsAuthorizer(auth_client, transfer_scope(*consents))
    return globus_sdk.TransferClient(authorizer=authorizer)


def write(root, rel, data, mtime=None):
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data if isinstance(data, bytes) else data.encode())
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def read(root, rel):
    with open(os.path.join(str(root), rel), "rb") as handle:
        return handle.read()


def tree(root):
    """Relative paths of all files below ``root``."""
    out = set()
    for dirpath, _dirnames, filenames in os.walk(str(root)):
        for name in filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), str(root)))
    return out


def transfer(tc, emulator, items, wait=True, **options):
    """Submit ``items`` ((src, dst) or (src, dst, recursive)) from SRC to DST; return the task doc."""
    data = globus_sdk.TransferData(SRC_ID, DST_ID, **options)
    for item in items:
        source, destination, *rest = item
        if rest:
            data.add_item(source, destination, recursive=rest[0])
        else:
            data.add_item(source, destination)
    result = tc.submit_transfer(data)
    if not wait:
        return result
    emulator.wait_idle(task_ids=[result["task_id"]])
    return tc.get_task(result["task_id"])


def poll(predicate, timeout=10.0, interval=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")
