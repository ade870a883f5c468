# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Small helpers shared by the emulator modules: errors, time formats, ids and path mapping.

Globus uses two timestamp spellings and the emulator keeps both, because clients parse them:
task documents and events use ``2021-09-02T18:04:47+00:00`` while directory listings use
``2021-01-15 01:45:50+00:00`` (both taken from recorded service responses).
"""

from __future__ import annotations

import datetime
import hashlib
import http
import os
import posixpath
import secrets
import string
import time
import uuid
import zlib

_ALPHABET = string.ascii_letters + string.digits


class APIError(Exception):
    """An error the emulator answers with, shaped like a Transfer API error document."""

    def __init__(self, status, code, message, headers=None, **extra):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self, resource):
        doc = {"code": self.code, "message": self.message, "request_id": request_id(), "resource": resource}
        doc.update(self.extra)
        return doc


class OAuthError(Exception):
    """An OAuth2 error from the Auth token endpoints (RFC 6749 section 5.2 shape)."""

    def __init__(self, status, error, description=None, headers=None):
        super().__init__(f"{status} {error}")
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}

    def body(self):
        """The OAuth2 fields plus the ``errors`` list recorded Auth responses carry (globus_sdk.testing):
        the SDK takes an error's ``code`` from there."""
        title = http.HTTPStatus(self.status).phrase
        doc = {"error": self.error, "error_description": self.description or title,
               "errors": [{"status": str(self.status), "id": str(uuid.uuid1()), "code": self.error.upper(),
                           "title": title, "detail": self.description or title}]}
        return doc


def now():
    return time.time()


def request_id():
    """Globus request ids are 9 random alphanumerics, e.g. ``7HgMVYazI``."""
    return "".join(secrets.choice(_ALPHABET) for _position in range(9))


def iso(ts):
    """Task and event time format: ``YYYY-MM-DDTHH:MM:SS+00:00`` (UTC, whole seconds)."""
    if ts is None:
        return None
    moment = datetime.datetime.fromtimestamp(int(ts), tz=datetime.timezone.utc)
    return moment.isoformat()


def iso_space(ts):
    """Directory-listing time format: ``YYYY-MM-DD HH:MM:SS+00:00``."""
    return iso(ts).replace("T", " ")


def parse_time(text):
    """Parse an ISO 8601 date or datetime; naive values are UTC, as Globus treats them."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty timestamp")
    value = text.strip().replace("Z", "+00:00")
    moment = datetime.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def normalize_collection_path(path):
    """Turn a Globus path (``/a/b``, ``~/a``, ``/~/a``) into a normalized absolute POSIX path.

    The emulator maps the home directory ``~`` to the collection root.  Returns None when
    the path climbs above the root with ``..``; callers turn that into the API's
    permission error, as a collection's path restrictions do.
    """
    if path.startswith("/~"):
        path = path[2:]
    elif path.startswith("~"):
        path = path[1:]
    if not path.startswith("/"):
        path = "/" + path
    depth = 0
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return None
        else:
            depth += 1
    return posixpath.normpath(path).replace("//", "/")


def to_local(root, collection_path):
    """Map a normalized collection path to the local filesystem path under ``root``."""
    rel = collection_path.lstrip("/")
    return os.path.join(root, rel) if rel else root


def contained(root, local):
    """True when ``local`` (after resolving symlinks) stays inside ``root``."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(local)
    return real == real_root or real.startswith(real_root + os.sep)


def is_uuid(text):
    try:
        uuid.UUID(str(text))
    except (TypeError, ValueError):
        return False
    return True


def _digest(name):
    def compute(handle):
        digest = hashlib.new(name)
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        return digest.hexdigest()

    return compute


def _running(function):
    def compute(handle):
        value = function(b"")
        for block in iter(lambda: handle.read(1 << 20), b""):
            value = function(block, value)
        return "%08x" % value

    return compute


CHECKSUM_ALGORITHMS = {"MD5": _digest("md5"), "SHA1": _digest("sha1"), "SHA256": _digest("sha256"),
                       "SHA512": _digest("sha512"), "ADLER32": _running(zlib.adler32), "CRC32": _running(zlib.crc32)}


def file_checksum(path, algorithm="MD5"):
    """Hex checksum of a file with one of CHECKSUM_ALGORITHMS (names are case-insensitive)."""
    with open(path, "rb") as handle:
        return CHECKSUM_ALGORITHMS[algorithm.upper()](handle)
