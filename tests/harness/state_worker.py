# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A separate process that uses the state layer, for concurrency and crash tests.

    state_worker.py migrate URL
    state_worker.py upsert URL TAG START COUNT BATCH     # rows job=TAG, keys START..START+COUNT
    state_worker.py crash URL BATCHES BATCH              # commits BATCHES, then hangs inside one more

Prints one line per committed step so the parent can time a SIGKILL.
"""

from __future__ import annotations

import sys
import time

from ansible_collections.scidata.replication.plugins.module_utils._state import open_state


def item_rows(tag, start, count):
    now = time.time()
    return [dict(route=tag, source_collection="src", source_path="/data/%08d" % n, destination_collection="dst",
                 destination_path="/replica/%08d" % n, status="PENDING", created_at=now, updated_at=now)
            for n in range(start, start + count)]


def main():
    command, url = sys.argv[1], sys.argv[2]
    db = open_state(url)
    if command == "migrate":
        print("version %d" % db.schema_version(), flush=True)
    elif command == "upsert":
        tag, start, count, batch = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        for offset in range(start, start + count, batch):
            db.upsert("transfer_items", item_rows(tag, offset, min(batch, start + count - offset)),
                      key=["route", "source_path", "destination_collection", "destination_path"],
                      update=["status", "updated_at"])
            print("committed %d" % offset, flush=True)
    elif command == "crash":
        batches, batch = int(sys.argv[3]), int(sys.argv[4])
        for number in range(batches):
            db.upsert("transfer_items", item_rows("crash", number * batch, batch),
                      key=["route", "source_path", "destination_collection", "destination_path"])
            print("committed %d" % number, flush=True)
        with db.transaction():
            db.upsert("transfer_items", item_rows("crash", batches * batch, batch),
                      key=["route", "source_path", "destination_collection", "destination_path"])
            print("in-flight", flush=True)
            time.sleep(600)
    db.close()


if __name__ == "__main__":
    main()
