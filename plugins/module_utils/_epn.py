# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.
"""Facility-portal client and EPN planning shared by the EPN modules.

An EPN (experiment proposal number) names one experiment's data folder at the
facility. This file holds the client for the facility portal (the Australian
Synchrotron portal API used by mxsync/epnalert): password-grant login per equipment
entry and the visits query, with one re-login on HTTP 401. It also holds the pure
rules around it: which visits are ready to sync, EPN name validation, the
``epn_cap_map`` project lookup, and the source/destination path templates.
"""

from __future__ import annotations

import datetime
import http.client
import json
import re
import string
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

from ansible_collections.scidata.replication.plugins.module_utils._errors import (
    ConfigError,
    PortalError,
)

DEFAULT_TIMEOUT = 30
HTTP_AGENT = "scidata.replication"

DEFAULT_EPN_PATTERN = r"[A-Za-z0-9._-]+"
DEFAULT_DEST_TEMPLATE = "{dest_root}/{project}/{epn}/data/"
DEFAULT_SOURCE_TEMPLATE = "{src_prefix}/{beamline}/{epn}/"
TEMPLATE_FIELDS = ("dest_root", "src_prefix", "beamline", "project", "epn")

EQUIPMENT_KEYS = ("id", "client_name", "client_password", "username", "password")

# mxsync's rule: the EPN base is the leading run of digits ("12345a", "12345-1" -> "12345").
_EPN_BASE_RE = re.compile(r"[0-9]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SECRET_QUERY_KEYS = ("access_token", "token", "password", "client_password", "secret")
_REDACTED = "********"


def _name_problem(name, pattern):
    """Return why ``name`` is not safe as one path component, or None when it is."""
    if not isinstance(name, str) or not name:
        return "is empty or not a string"
    if name.startswith("-"):
        return "starts with '-'"
    if name == "." or ".." in name:
        return "is '.' or contains '..'"
    if "/" in name:
        return "contains '/'"
    if _CONTROL_RE.search(name):
        return "contains a control character"
    if not pattern.fullmatch(name):
        return "does not match the pattern %s" % pattern.pattern
    return None


def _compile_pattern(pattern):
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise ConfigError("epn_pattern %r is not a valid regular expression: %s" % (pattern, exc)) from None


def validate_epn(epn, pattern=DEFAULT_EPN_PATTERN):
    """Return the reason ``epn`` is rejected, or None when it is a safe EPN name.

    ``pattern`` must match the whole name; the checks against '/', '..', '.', a
    leading '-' and control characters apply whatever the pattern allows.
    """
    return _name_problem(epn, _compile_pattern(pattern))


def epn_base(epn):
    """Return the leading digits of ``epn`` (the ``epn_cap_map`` key), or None."""
    match = _EPN_BASE_RE.match(epn) if isinstance(epn, str) else None
    return match.group(0) if match else None


def project_for_epn(epn, epn_cap_map):
    """Return the project folder ``epn_cap_map`` gives the EPN's base number, or None."""
    base = epn_base(epn)
    if base is None:
        return None
    # YAML turns unquoted keys into integers; compare them as text.
    mapping = {str(key): value for key, value in (epn_cap_map or {}).items()}
    return mapping.get(base)


def render_path_template(template, fields):
    """Fill ``template`` from ``fields``; only plain ``{name}`` fields of TEMPLATE_FIELDS.

    Attribute access, indexing, conversions and format specs are refused so a
    template from configuration can only place the given strings.
    """
    if not isinstance(template, str):
        raise ConfigError("path template must be a string")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError("path template %r is malformed: %s" % (template, exc)) from None
    for _literal, field, format_spec, conversion in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS or format_spec or conversion:
            raise ConfigError(
                "path template %r may only use the fields %s" % (template, ", ".join("{%s}" % f for f in TEMPLATE_FIELDS))
            )
        if fields.get(field) is None:
            raise ConfigError("path template %r uses {%s}, which is not set" % (template, field))
    path = template.format(**fields)
    if not path.startswith("/"):
        raise ConfigError("path template %r must give an absolute path" % template)
    if ".." in path.split("/"):
        raise ConfigError("path template %r must not contain '..' components" % template)
    return path


def plan_epn_transfers(
    epns,
    epn_cap_map,
    dest_root,
    src_prefix,
    beamline=None,
    dest_template=DEFAULT_DEST_TEMPLATE,
    source_template=DEFAULT_SOURCE_TEMPLATE,
    epn_pattern=DEFAULT_EPN_PATTERN,
):
    """Sort EPNs into transfers, rejected names and EPNs without a project.

    Returns ``transfers`` (``epn``, ``project``, ``source_path``, ``dest_path``),
    ``rejected`` (``epn``, ``reason``) and ``unmapped`` (EPNs whose base number has no
    ``epn_cap_map`` entry; never guessed). Duplicates are planned once.
    """
    pattern = _compile_pattern(epn_pattern)
    safe_name = re.compile(DEFAULT_EPN_PATTERN)
    for name, value in (("dest_root", dest_root), ("src_prefix", src_prefix)):
        if not isinstance(value, str) or not value.startswith("/"):
            raise ConfigError("%s must be an absolute path" % name, option=name)
    if beamline is not None:
        problem = _name_problem(beamline, safe_name)
        if problem:
            raise ConfigError("beamline %r %s" % (beamline, problem), option="beamline")
    fixed = {"dest_root": dest_root.rstrip("/"), "src_prefix": src_prefix.rstrip("/"), "beamline": beamline}
    # Check the templates once up front, so a bad one fails even with nothing to plan.
    sample = dict(fixed, project="project", epn="epn")
    render_path_template(dest_template, sample)
    render_path_template(source_template, sample)

    plan = {"transfers": [], "rejected": [], "unmapped": []}
    seen = set()
    for epn in epns:
        key = epn if isinstance(epn, str) else repr(epn)
        if key in seen:
            continue
        seen.add(key)
        problem = _name_problem(epn, pattern)
        if problem:
            plan["rejected"].append({"epn": epn, "reason": "EPN %s" % problem})
            continue
        project = project_for_epn(epn, epn_cap_map)
        if project is None:
            plan["unmapped"].append(epn)
            continue
        problem = _name_problem(project, safe_name)
        if problem:
            plan["rejected"].append({"epn": epn, "reason": "project folder %r from epn_cap_map %s" % (project, problem)})
            continue
        fields = dict(fixed, project=project, epn=epn)
        plan["transfers"].append({
            "epn": epn,
            "project": project,
            "source_path": render_path_template(source_template, fields),
            "dest_path": render_path_template(dest_template, fields),
        })
    return plan


def parse_portal_time(value, default_tz):
    """Parse a portal ISO 8601 time; a time without offset is taken to be in ``default_tz``."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    text = value.strip()
    # fromisoformat() before Python 3.11 rejects the "Z" suffix.
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=default_tz)
    return parsed


def _visit_times(visit, default_tz):
    """Return ``(start, end)`` of a visit, or a reason string when they cannot be read."""
    if not isinstance(visit, dict) or not isinstance(visit.get("epn"), str):
        return "visit has no EPN"
    try:
        return parse_portal_time(visit.get("start_time"), default_tz), parse_portal_time(visit.get("end_time"), default_tz)
    except ValueError:
        return "visit has an unreadable start_time or end_time"


def _check_now(now):
    if not isinstance(now, datetime.datetime) or now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")


def _check_day_range(visit_day_range):
    if isinstance(visit_day_range, bool) or not isinstance(visit_day_range, (int, float)) or visit_day_range < 0:
        raise ConfigError("visit_day_range must be a number of days, 0 or more", option="visit_day_range")


def current_start(visits, now):
    """Return the earliest start of any visit running at ``now``, or ``now`` itself."""
    _check_now(now)
    earliest = now
    for visit in visits:
        times = _visit_times(visit, now.tzinfo)
        if isinstance(times, tuple) and times[0] <= now < times[1]:
            earliest = min(earliest, times[0])
    return earliest


def select_visits_to_sync(visits, now, visit_day_range):
    """Choose the visits whose data is ready, by mxsync's rule, as a pure function.

    A visit is ready when it ended before the earliest start of any visit still
    running at ``now`` (``current_start``), and no more than ``visit_day_range`` days
    before it. Every visit of an EPN that still has a running visit is held back, so an
    experiment in progress is never synced. Times without an offset are read in
    ``now``'s timezone.

    Returns ``visits`` (one per EPN, its latest-ending ready visit, ordered by end
    time), ``skipped`` (``epn``, ``reason``) and ``current_start`` (ISO 8601).
    """
    _check_day_range(visit_day_range)
    start = current_start(visits, now)
    window_start = start - datetime.timedelta(days=visit_day_range)

    readable = []
    skipped = []
    running_epns = set()
    for visit in visits:
        times = _visit_times(visit, now.tzinfo)
        if not isinstance(times, tuple):
            skipped.append({"epn": visit.get("epn") if isinstance(visit, dict) else None, "reason": times})
            continue
        readable.append((visit, times[1]))
        if times[0] <= now < times[1]:
            running_epns.add(visit["epn"])

    latest = {}
    for visit, end in readable:
        if not window_start <= end < start:
            continue
        if visit["epn"] in running_epns:
            held_back = {"epn": visit["epn"], "reason": "EPN has a visit still running"}
            if held_back not in skipped:
                skipped.append(held_back)
            continue
        if visit["epn"] not in latest or end > latest[visit["epn"]][1]:
            latest[visit["epn"]] = (visit, end)
    ordered = sorted(latest.values(), key=lambda item: (item[1], item[0]["epn"]))
    return {"visits": [visit for visit, _end in ordered], "skipped": skipped, "current_start": start.isoformat()}


def redact_url(url):
    """Return ``url`` with secret query values and any userinfo password masked."""
    parts = urlsplit(url)
    query = urlencode(
        [(key, _REDACTED if key.lower() in _SECRET_QUERY_KEYS else value) for key, value in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    netloc = parts.netloc
    if "@" in netloc:
        netloc = _REDACTED + "@" + netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _check_base_url(base_url):
    try:
        parts = urlsplit(base_url)
    except (TypeError, ValueError, AttributeError):
        raise ConfigError("base_url must be an http(s) URL", option="base_url") from None
    if not isinstance(base_url, str) or parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError("base_url must be an http(s) URL without query or fragment", option="base_url")
    return base_url.rstrip("/")


def _error_message(payload):
    """Return the portal's ``meta.error_message`` from a decoded body, if it sent one."""
    if isinstance(payload, dict) and isinstance(payload.get("meta"), dict):
        message = payload["meta"].get("error_message")
        if isinstance(message, str) and message:
            return message
    return None


class PortalClient:
    """Client for one portal equipment entry (its own API client and user credentials)."""

    def __init__(
        self,
        base_url,
        equipment_id,
        client_name,
        client_password,
        username,
        password,
        validate_certs=True,
        ca_path=None,
        timeout=DEFAULT_TIMEOUT,
    ):
        self.base_url = _check_base_url(base_url)
        self.equipment_id = str(equipment_id)
        self.client_name = client_name
        self.username = username
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout
        self._client_password = client_password
        self._password = password
        self._access_token = None

    def _scrub(self, text):
        """Mask every secret in ``text``: the portal may echo what it was sent."""
        secrets = [s for s in (self._password, self._client_password, self._access_token) if s]
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, _REDACTED)
        return text

    def _send(self, url, method, data=None, basic_auth=False):
        """Return ``(status, decoded JSON or None)``; only transport failures raise."""
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            response = open_url(
                url,
                data=data,
                headers=headers,
                method=method,
                timeout=self.timeout,
                validate_certs=self.validate_certs,
                ca_path=self.ca_path,
                url_username=self.client_name if basic_auth else None,
                url_password=self._client_password if basic_auth else None,
                force_basic_auth=basic_auth,
                http_agent=HTTP_AGENT,
                # A redirect would carry the access token in the query string elsewhere.
                follow_redirects="none",
                use_netrc=False,
            )
            status, body = response.getcode(), response.read()
        except HTTPError as exc:
            status = exc.code
            try:
                body = exc.read()
            except (OSError, AttributeError):
                body = b""
        except (URLError, UrlsConnectionError, http.client.HTTPException, OSError, ValueError) as exc:
            raise PortalError(
                self._scrub("cannot reach the facility portal at %s: %s" % (redact_url(url), exc)),
                url=redact_url(url),
                equipment_id=self.equipment_id,
            ) from None
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        return status, payload

    def _failure(self, action, url, status, payload):
        message = _error_message(payload) or "HTTP %s" % status
        return PortalError(
            self._scrub("facility portal %s failed for equipment %s: %s" % (action, self.equipment_id, message)),
            status=status,
            url=redact_url(url),
            equipment_id=self.equipment_id,
        )

    def login(self):
        """Obtain an access token with the password grant and HTTP basic client auth."""
        url = self.base_url + "/api/v1/oauth/token"
        form = urlencode({"username": self.username, "password": self._password, "grant_type": "password"})
        self._access_token = None
        status, payload = self._send(url, "POST", data=form.encode("ascii"), basic_auth=True)
        token = None
        if status == 200 and isinstance(payload, dict) and isinstance(payload.get("data"), dict):
            token = payload["data"].get("access_token")
        if not isinstance(token, str) or not token:
            raise self._failure("login", url, status, payload)
        self._access_token = token

    def _visits_url(self, start_time, end_time):
        query = urlencode({
            "access_token": self._access_token,
            "start_time": start_time.isoformat(),
            "end_time": end_time.isoformat(),
        })
        return "%s/api/v1/equipment/%s/visits?%s" % (self.base_url, quote(self.equipment_id, safe=""), query)

    def get_visits(self, start_time, end_time):
        """Return the portal's visit dicts overlapping ``start_time``..``end_time``.

        Logs in when there is no token yet; on HTTP 401 logs in again once and retries.
        """
        if self._access_token is None:
            self.login()
        url = self._visits_url(start_time, end_time)
        status, payload = self._send(url, "GET")
        if status == 401:
            self.login()
            url = self._visits_url(start_time, end_time)
            status, payload = self._send(url, "GET")
        if status != 200:
            raise self._failure("visits query", url, status, payload)
        data = payload.get("data") if isinstance(payload, dict) else None
        visits = data.get("visits") if isinstance(data, dict) else None
        if not isinstance(visits, list) or not all(isinstance(visit, dict) for visit in visits):
            raise self._failure("visits query", url, status, {"meta": {"error_message": "response has no visit list"}})
        return visits


def portal_clients(base_url, equipment, validate_certs=True, ca_path=None, timeout=DEFAULT_TIMEOUT):
    """Build one PortalClient per ``equipment`` entry (mxsync's config shape)."""
    if not isinstance(equipment, list) or not equipment:
        raise ConfigError("equipment must be a non-empty list", option="equipment")
    clients = []
    for index, entry in enumerate(equipment):
        missing = [key for key in EQUIPMENT_KEYS if not isinstance(entry, dict) or entry.get(key) in (None, "")]
        if missing:
            raise ConfigError("equipment entry %d lacks %s" % (index, ", ".join(missing)), option="equipment")
        clients.append(PortalClient(
            base_url,
            entry["id"],
            entry["client_name"],
            entry["client_password"],
            entry["username"],
            entry["password"],
            validate_certs=validate_certs,
            ca_path=ca_path,
            timeout=timeout,
        ))
    return clients


def fetch_visits(clients, start_time, end_time):
    """Return the visits of every client, each copy tagged with its ``equipment_id``."""
    visits = []
    for client in clients:
        visits.extend(dict(visit, equipment_id=client.equipment_id) for visit in client.get_visits(start_time, end_time))
    return visits


def fetch_visits_to_sync(clients, now, visit_day_range):
    """Query the portal as mxsync does and apply ``select_visits_to_sync``.

    First the visits around ``now`` give ``current_start``; then the visits from
    ``visit_day_range`` days before it up to it are fetched.
    """
    _check_now(now)
    _check_day_range(visit_day_range)
    running = fetch_visits(clients, now, now + datetime.timedelta(hours=1))
    start = current_start(running, now)
    earlier = fetch_visits(clients, start - datetime.timedelta(days=visit_day_range), start)
    return select_visits_to_sync(running + earlier, now, visit_day_range)
