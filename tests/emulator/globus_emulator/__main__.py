# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Command line: ``python -m globus_emulator --config C.json --port 0 --port-file P``.

The port file is written atomically (temp file + rename) only once the socket listens, so a
parent process that sees the file can connect at once.  SIGTERM and SIGINT stop the HTTP
server and the worker threads, then the process exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading

from .server import App, EmulatorHTTPServer
from .state import State
from .worker import Worker


def write_atomically(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".port-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="globus_emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON file with collections, clients and limits")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--log-level", default=os.environ.get("GLOBUS_EMULATOR_LOG_LEVEL", "WARNING"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    with open(args.config, encoding="utf-8") as handle:
        config = json.load(handle)
    state = State(config)
    worker = Worker(state)
    server = EmulatorHTTPServer((args.host, args.port), App(state, worker))
    port = server.server_address[1]
    state.set_server_address(args.host, port)
    worker.start()

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    serving.start()
    if args.port_file:
        write_atomically(args.port_file, f"{port}\n")
    logging.getLogger("globus_emulator").info("listening on http://%s:%d/", args.host, port)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    worker.stop()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
