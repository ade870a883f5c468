# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Query-string parsing for the listing resources: integers, ``filter`` clauses, ``orderby``.

Filters follow the Transfer API syntax: clauses joined by ``/``, each ``field:value`` with
comma-separated alternatives and ``start,end`` time ranges in which either end may be empty.
Label values are exact (``name`` or ``=name``) or, after ``~``, case-insensitive patterns in which
``*`` matches anything; ``!`` negates a value. A task matches when its label matches one of the
plain values (if there are any) and none of the negated ones; a task without a label matches no
value, so it passes a filter made of negated values only.
"""

from __future__ import annotations

import re

from .util import APIError, parse_time


def int_param(query, key, default):
    value = query.get(key)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise APIError(400, "ClientError.BadRequest", f"'{key}' must be an integer") from None


def time_range(value):
    start, _sep, end = value.partition(",")
    lo = parse_time(start) if start.strip() else None
    hi = parse_time(end) if end.strip() else None
    return lo, hi


def task_filters(text):
    """``filter`` clauses joined by ``/``: task_id, type, status, label, request_time, completion_time."""
    predicates = []
    for clause in filter(None, text.split("/")):
        key, sep, value = clause.partition(":")
        if not sep:
            raise APIError(400, "ClientError.BadRequest", f"Invalid filter clause '{clause}'")
        values = [v for v in value.split(",") if v != ""]
        if key == "task_id":
            wanted = {v.lower() for v in values}
            predicates.append(lambda t, w=wanted: t.task_id in w)
        elif key == "type":
            wanted = {v.upper() for v in values}
            predicates.append(lambda t, w=wanted: t.type in w)
        elif key == "status":
            wanted = {v.upper() for v in values}
            predicates.append(lambda t, w=wanted: t.status in w)
        elif key == "label":
            predicates.append(label_filter(value.split(",")))
        elif key in ("request_time", "completion_time"):
            try:
                lo, hi = time_range(value)
            except ValueError:
                raise APIError(400, "ClientError.BadRequest", f"Invalid time range '{value}'") from None

            def in_range(t, attr=key, lo=lo, hi=hi):
                stamp = getattr(t, attr)
                if stamp is None:
                    return False
                return (lo is None or stamp >= lo) and (hi is None or stamp <= hi)

            predicates.append(in_range)
        elif key == "is_paused":
            flag = value.lower() in ("1", "true")
            predicates.append(lambda t, f=flag: t.is_paused == f)
        else:
            raise APIError(400, "ClientError.BadRequest", f"Unsupported filter field '{key}'")
    return predicates


def label_matcher(value):
    """One label value (without ``!``): exact, or a ``~`` pattern with ``*`` wildcards."""
    if value.startswith("~"):
        pattern = re.compile(".*".join(re.escape(part) for part in value[1:].split("*")), re.IGNORECASE | re.DOTALL)
        return lambda label: label is not None and pattern.fullmatch(label) is not None
    exact = value[1:] if value.startswith("=") else value
    return lambda label: label == exact


def label_filter(values):
    wanted = [label_matcher(v) for v in values if v and not v.startswith("!")]
    unwanted = [label_matcher(v[1:]) for v in values if v.startswith("!")]

    def matches(task):
        if wanted and not any(m(task.label) for m in wanted):
            return False
        return not any(m(task.label) for m in unwanted)

    return matches


def order_tasks(tasks, orderby):
    """Default order is newest request first; ``orderby`` takes ``field [ASC|DESC]`` clauses."""
    if not orderby:
        return sorted(tasks, key=lambda t: t.seq, reverse=True)
    ordered = list(tasks)
    clauses = [c.strip() for c in orderby.split(",") if c.strip()]
    allowed = {"request_time", "completion_time", "label", "status", "type", "deadline"}
    for clause in reversed(clauses):
        parts = clause.split()
        field = parts[0]
        if field not in allowed:
            raise APIError(400, "ClientError.BadRequest", f"Unsupported orderby field '{field}'")
        desc = len(parts) > 1 and parts[1].upper() == "DESC"
        key = "seq" if field == "request_time" else field
        ordered.sort(key=lambda t, k=key: (getattr(t, k) is None, getattr(t, k) or 0), reverse=desc)
    return ordered
