# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""How a name that is not valid UTF-8 is shown: the one escaping of the collection.

A file name is bytes. Cores carry names as ``str`` decoded with ``surrogateescape`` (what
``os.fsdecode`` does), so every byte survives the round trip to disk. Only when a name
leaves the module (result, run log, message) is it shown: valid UTF-8 as it is, and each
byte that is not part of valid UTF-8 as ``\\xNN`` (two lower-case hex digits). Ansible
refuses a result holding a string that is not valid UTF-8, so the module base applies
this to everything it returns or logs.
"""

from __future__ import annotations


def shown_name(name):
    """``name`` (bytes, or str with surrogate escapes) as valid UTF-8 text, bad bytes as ``\\xNN``."""
    if isinstance(name, (bytes, bytearray)):
        raw = bytes(name)
    else:
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            # A lone surrogate outside the escape range (a JSON "\\ud800"): its bytes are shown.
            raw = name.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def _needs_escape(text):
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def shown_data(value):
    """``value`` (a result or log entry) with every str or bytes in it, keys too, as ``shown_name``."""
    if isinstance(value, str):
        return shown_name(value) if _needs_escape(value) else value
    if isinstance(value, (bytes, bytearray)):
        return shown_name(value)
    if isinstance(value, dict):
        return dict((shown_data(key), shown_data(item)) for key, item in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return [shown_data(item) for item in value]
    return value
