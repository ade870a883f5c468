# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real SMTP server (aiosmtpd) that writes each accepted message to MAILDIR/<n>.eml.

Every message is stored with the envelope in X-Envelope-From / X-Envelope-To headers so
tests can check both what was said and to whom it was sent.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import threading

from aiosmtpd.controller import Controller


class SaveToDirectory(object):
    def __init__(self, maildir):
        self.maildir = maildir
        self.counter = itertools.count(len(os.listdir(maildir)) + 1)
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        header = "X-Envelope-From: %s\r\nX-Envelope-To: %s\r\n" % (envelope.mail_from, ", ".join(envelope.rcpt_tos))
        with self.lock:
            number = next(self.counter)
        temporary = os.path.join(self.maildir, ".%d.tmp" % number)
        with open(temporary, "wb") as handle:
            handle.write(header.encode("ascii") + envelope.original_content)
        os.rename(temporary, os.path.join(self.maildir, "%d.eml" % number))
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    args = parser.parse_args()
    os.makedirs(args.maildir, exist_ok=True)
    controller = Controller(SaveToDirectory(args.maildir), hostname="127.0.0.1", port=args.port)
    controller.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    controller.stop()


if __name__ == "__main__":
    main()
