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
``epn_cap_map`` project lookup, and the source/destination path templates; the SFTP
side (paramiko with known host keys only: listing EPN folders and walking them); the
argument specs the EPN modules share; mxsync's ``ignore.yml``; and the alert plan
(unknown EPNs, visit details, re-alert dedup).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import http.client
import json
import re
import socket
import stat
import string
import threading
import time
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.common.yaml import HAS_YAML, yaml_load
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

from ansible_collections.scidata.replication.plugins.module_utils._errors import (
    ConfigError,
    MissingLibraryError,
    PortalError,
    RsyncError,
)
from ansible_collections.scidata.replication.plugins.module_utils._rsync import backoff_seconds

try:
    import zoneinfo

    HAS_ZONEINFO = True
except ImportError:  # Python < 3.9
    HAS_ZONEINFO = False

try:
    import paramiko

    HAS_PARAMIKO = True
    PARAMIKO_IMPORT_ERROR = None
except ImportError as exc:  # only epn_alert and epn_inventory need it
    HAS_PARAMIKO = False
    PARAMIKO_IMPORT_ERROR = exc

DEFAULT_TIMEOUT = 30
DEFAULT_PORTAL_RETRIES = 3
DEFAULT_PORTAL_RETRY_DELAY = 2
PORTAL_RETRY_MAX_DELAY = 30
DEFAULT_PORTAL_TIMEZONE = "UTC"
HTTP_AGENT = "scidata.replication"
DEFAULT_SRC_PREFIX = "/data"
DEFAULT_VISIT_DAY_RANGE = 30

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


def _is_utf8(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes of bytes that are not UTF-8
        return False
    return True


def _name_problem(name, pattern):
    """Return why ``name`` is not safe as one path component, or None when it is."""
    if not isinstance(name, str) or not name:
        return "is empty or not a string"
    if not name.isascii() and not _is_utf8(name):
        return "is not valid UTF-8"
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


def current_start(visits, now, portal_tz=None):
    """Return the earliest start of any visit running at ``now``, or ``now`` itself."""
    _check_now(now)
    earliest = now
    for visit in visits:
        times = _visit_times(visit, portal_tz or now.tzinfo)
        if isinstance(times, tuple) and times[0] <= now < times[1]:
            earliest = min(earliest, times[0])
    return earliest


def select_visits_to_sync(visits, now, visit_day_range, portal_tz=None):
    """Choose the visits whose data is ready, by mxsync's rule, as a pure function.

    A visit is ready when it ended before the earliest start of any visit still
    running at ``now`` (``current_start``), and no more than ``visit_day_range`` days
    before it. Every visit of an EPN that still has a running visit is held back, so an
    experiment in progress is never synced. Times without an offset are read in
    ``portal_tz`` (default: ``now``'s timezone).

    Returns ``visits`` (one per EPN, its latest-ending ready visit, ordered by end
    time), ``skipped`` (``epn``, ``reason``: unreadable visits, EPNs with a visit still
    running, and visits that ended after ``current_start``) and ``current_start`` (ISO 8601).
    """
    _check_day_range(visit_day_range)
    portal_tz = portal_tz or now.tzinfo
    start = current_start(visits, now, portal_tz)
    window_start = start - datetime.timedelta(days=visit_day_range)

    readable = []
    skipped = []
    running_epns = set()
    seen = set()
    for visit in visits:
        key = json.dumps(visit, sort_keys=True, default=str)
        if key in seen:  # the two portal windows overlap
            continue
        seen.add(key)
        times = _visit_times(visit, portal_tz)
        if not isinstance(times, tuple):
            skipped.append({"epn": visit.get("epn") if isinstance(visit, dict) else None, "reason": times})
            continue
        readable.append((visit, times[1]))
        if times[0] <= now < times[1]:
            running_epns.add(visit["epn"])

    latest = {}
    late = set()
    for visit, end in readable:
        if visit["epn"] in running_epns:
            held_back = {"epn": visit["epn"], "reason": "EPN has a visit still running"}
            if held_back not in skipped:
                skipped.append(held_back)
            continue
        if start <= end < now:
            late.add(visit["epn"])
        if not window_start <= end < start:
            continue
        if visit["epn"] not in latest or end > latest[visit["epn"]][1]:
            latest[visit["epn"]] = (visit, end)
    for epn in sorted(late - set(latest)):
        # Picked up by a later run, once no visit that started before it ended is running.
        skipped.append({"epn": epn, "reason": "visit ended after a visit still running started"})
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


def portal_timezone(name):
    """The ``tzinfo`` of an IANA zone name (``Australia/Melbourne``), for portal times without an offset."""
    if not HAS_ZONEINFO:
        raise MissingLibraryError("zoneinfo", "backports.zoneinfo", reason="to read portal_timezone")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError("portal_timezone %r is not an IANA time zone name such as Australia/Melbourne" % (name,),
                          option="portal_timezone") from None


class PortalClient:
    """Client for one portal equipment entry (its own API client and user credentials).

    A 5xx answer or a failed connection is tried again ``retries`` times, waiting
    ``retry_delay`` seconds and doubling (at most PORTAL_RETRY_MAX_DELAY) in between.
    """

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
        retries=DEFAULT_PORTAL_RETRIES,
        retry_delay=DEFAULT_PORTAL_RETRY_DELAY,
        sleep=time.sleep,
    ):
        self.base_url = _check_base_url(base_url)
        self.retries = retries
        self.retry_delay = retry_delay
        self.sleep = sleep
        self.attempts = 0  # of the last request
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
        """``_send_once`` with retries of 5xx answers and failed connections."""
        attempt = 1
        while True:
            self.attempts = attempt
            try:
                status, payload = self._send_once(url, method, data, basic_auth)
            except PortalError as exc:
                if attempt > self.retries:
                    exc.msg += self._attempts_note()
                    raise
            else:
                if status < 500 or attempt > self.retries:
                    return status, payload
            self.sleep(backoff_seconds(attempt, self.retry_delay, 2, PORTAL_RETRY_MAX_DELAY))
            attempt += 1

    def _send_once(self, url, method, data=None, basic_auth=False):
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

    def _attempts_note(self):
        return " (after %d attempts)" % self.attempts if self.attempts > 1 else ""

    def _failure(self, action, url, status, payload):
        message = _error_message(payload) or "HTTP %s" % status
        if status >= 500:
            message += self._attempts_note()
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
            said = _error_message(payload)
            message = 'the portal said "%s"' % said if said else "response has no visit list"
            raise self._failure("visits query", url, status, {"meta": {"error_message": message}})
        return visits


def portal_clients(base_url, equipment, validate_certs=True, ca_path=None, timeout=DEFAULT_TIMEOUT,
                   retries=DEFAULT_PORTAL_RETRIES, retry_delay=DEFAULT_PORTAL_RETRY_DELAY, allow_http=False,
                   warn=None):
    """Build one PortalClient per ``equipment`` entry (mxsync's config shape).

    The password grant sends passwords: plain ``http://`` is refused unless ``allow_http``
    (a test server), and then ``warn`` is told.
    """
    if not isinstance(equipment, list) or not equipment:
        raise ConfigError("equipment must be a non-empty list", option="equipment")
    if isinstance(base_url, str) and urlsplit(base_url).scheme == "http":
        if not allow_http:
            raise ConfigError("portal_url %s is plain http://, which would send the portal passwords unencrypted; use "
                              "https://, or set portal_allow_http=true for a test server" % redact_url(base_url),
                              option="portal_url")
        if warn is not None:
            warn("portal_url %s is plain http://: the portal passwords and tokens travel unencrypted"
                 % redact_url(base_url))
    for name, value in (("portal_retries", retries), ("portal_retry_delay", retry_delay)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError("%s must be 0 or more" % name, option=name)
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
            retries=retries,
            retry_delay=retry_delay,
        ))
    return clients


def fetch_visits(clients, start_time, end_time):
    """Return the visits of every client, each copy tagged with its ``equipment_id``."""
    visits = []
    for client in clients:
        visits.extend(dict(visit, equipment_id=client.equipment_id) for visit in client.get_visits(start_time, end_time))
    return visits


def fetch_visits_to_sync(clients, now, visit_day_range, portal_tz=None):
    """Query the portal as mxsync does and apply ``select_visits_to_sync``.

    First the visits around ``now`` give ``current_start``; then the visits from
    ``visit_day_range`` days before it up to ``now`` are fetched, so the visits that ended
    after ``current_start`` are seen and reported as held back. Portal times without an
    offset are read in ``portal_tz`` (default: ``now``'s zone).
    """
    _check_now(now)
    _check_day_range(visit_day_range)
    running = fetch_visits(clients, now, now + datetime.timedelta(hours=1))
    start = current_start(running, now, portal_tz)
    earlier = fetch_visits(clients, start - datetime.timedelta(days=visit_day_range), now)
    return select_visits_to_sync(running + earlier, now, visit_day_range, portal_tz)


# -- argument specs the EPN modules share (documented in the scidata.replication._epn doc fragment) --

# Where the EPN folders are and how to reach them over SSH.
SSH_ARGUMENT_SPEC = dict(
    host=dict(type="str", required=True),
    port=dict(type="int", default=22),
    user=dict(type="str", required=True),
    key_file=dict(type="path"),
    known_hosts_file=dict(type="path"),
    connect_timeout=dict(type="int", default=30),
    server_alive_interval=dict(type="int", default=15),
    server_alive_count_max=dict(type="int", default=4),
    src_prefix=dict(type="str", default=DEFAULT_SRC_PREFIX),
    beamline=dict(type="str"),
    epn_pattern=dict(type="str", default=DEFAULT_EPN_PATTERN),
)

# The facility portal: one entry per equipment, each with its own credentials (mxsync's config).
PORTAL_ARGUMENT_SPEC = dict(
    portal_url=dict(type="str", aliases=["base_url"], fallback=(env_fallback, ["SCIDATA_PORTAL_URL"])),
    equipment=dict(type="list", elements="dict", options=dict(
        id=dict(type="str", required=True),
        client_name=dict(type="str", required=True),
        client_password=dict(type="str", required=True, no_log=True),
        username=dict(type="str", required=True),
        password=dict(type="str", required=True, no_log=True),
    )),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    portal_timeout=dict(type="int", default=DEFAULT_TIMEOUT),
    portal_retries=dict(type="int", default=DEFAULT_PORTAL_RETRIES),
    portal_retry_delay=dict(type="int", default=DEFAULT_PORTAL_RETRY_DELAY),
    portal_allow_http=dict(type="bool", default=False),
    portal_timezone=dict(type="str", default=DEFAULT_PORTAL_TIMEZONE),
    visit_day_range=dict(type="int", default=DEFAULT_VISIT_DAY_RANGE),
)


def portal_clients_from_params(params, warn=None):
    """PortalClients from the PORTAL_ARGUMENT_SPEC options."""
    if not params.get("portal_url"):
        raise ConfigError("portal_url is needed to query the facility portal", option="portal_url")
    return portal_clients(
        params["portal_url"],
        params.get("equipment"),
        validate_certs=params["validate_certs"],
        ca_path=params.get("ca_path"),
        timeout=params["portal_timeout"],
        retries=params["portal_retries"],
        retry_delay=params["portal_retry_delay"],
        allow_http=params["portal_allow_http"],
        warn=warn,
    )


def epn_directory(src_prefix, beamline=None):
    """The remote folder whose sub-folders are EPNs: ``{src_prefix}/{beamline}`` (2021 layout)."""
    if not isinstance(src_prefix, str) or not src_prefix.startswith("/"):
        raise ConfigError("src_prefix must be an absolute path", option="src_prefix")
    if _CONTROL_RE.search(src_prefix) or ".." in src_prefix.split("/"):
        raise ConfigError("src_prefix must not contain control characters or '..'", option="src_prefix")
    path = src_prefix.rstrip("/") or ""
    if beamline is not None:
        problem = _name_problem(beamline, re.compile(DEFAULT_EPN_PATTERN))
        if problem:
            raise ConfigError("beamline %r %s" % (beamline, problem), option="beamline")
        path += "/" + beamline
    return path or "/"


# -- mxsync's ignore.yml ------------------------------------------------------------------

def read_ignore_file(path):
    """Return the ``previouslySynched`` EPNs of an mxsync ``ignore.yml`` as strings."""
    if not HAS_YAML:
        raise MissingLibraryError("yaml", "PyYAML", reason="to read import_ignore_file")
    try:
        with open(path, "rb") as handle:
            data = yaml_load(handle)
    except OSError as exc:
        raise ConfigError("cannot read import_ignore_file %s: %s" % (path, exc), option="import_ignore_file") from None
    except Exception as exc:  # the YAML library's own error types differ between loaders
        raise ConfigError("import_ignore_file %s is not valid YAML: %s" % (path, exc), option="import_ignore_file") from None
    if data is None:
        return []
    listed = data.get("previouslySynched") if isinstance(data, dict) else None
    if listed is None and isinstance(data, dict):
        return []
    if not isinstance(listed, list):
        raise ConfigError(
            "import_ignore_file %s must be a mapping with a previouslySynched list, as mxsync writes it" % path,
            option="import_ignore_file",
        )
    return [str(item) for item in listed if item is not None]


# -- SFTP (paramiko): host keys from known_hosts only ------------------------------------

# What rsync's default filter (--include=.info --exclude=.*) keeps, so the inventory counts
# the files epn_rsync transfers.
def rsync_default_filter(name):
    return name == ".info" or not name.startswith(".")


def _require_paramiko():
    if not HAS_PARAMIKO:
        raise MissingLibraryError("paramiko", "paramiko", reason="for SFTP access to the EPN folders",
                                  exception=PARAMIKO_IMPORT_ERROR)


class SftpSession(object):
    """One SSH connection with an SFTP channel, for ``with SftpSession(...) as sftp``.

    Host keys come from ``known_hosts_file`` (or the user's known_hosts) and an unknown or
    changed key is refused (``RejectPolicy``): never trust on first use.
    """

    def __init__(self, host, user, port=22, key_file=None, known_hosts_file=None, connect_timeout=30,
                 server_alive_interval=15):
        self.host = host
        self.port = port
        self.user = user
        self.key_file = key_file
        self.known_hosts_file = known_hosts_file
        self.connect_timeout = connect_timeout
        self.server_alive_interval = server_alive_interval
        self.client = None
        self.sftp = None

    @property
    def where(self):
        return "%s@%s:%d" % (self.user, self.host, self.port)

    def open(self):
        _require_paramiko()
        client = paramiko.SSHClient()
        try:
            if self.known_hosts_file:
                client.load_host_keys(self.known_hosts_file)
            else:
                client.load_system_host_keys()
        except (OSError, paramiko.SSHException) as exc:
            client.close()
            raise ConfigError("cannot read known_hosts_file %s: %s" % (self.known_hosts_file, exc),
                              option="known_hosts_file") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        known = self.known_hosts_file or "the user's known_hosts"
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=self.key_file,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                allow_agent=self.key_file is None,
                look_for_keys=self.key_file is None,
            )
            transport = client.get_transport()
            if self.server_alive_interval:
                transport.set_keepalive(self.server_alive_interval)
            self.sftp = client.open_sftp()
            # Every SFTP request fails instead of hanging when the server stops answering.
            self.sftp.get_channel().settimeout(max(self.connect_timeout, 1) * 4)
        except paramiko.BadHostKeyException:
            client.close()
            raise RsyncError(
                "the SSH host key of %s:%d does not match the one in %s; refusing to connect (the server "
                "was re-keyed or someone is in the middle). Check the new key out of band, then update "
                "known_hosts_file (for example with ansible.builtin.known_hosts)." % (self.host, self.port, known),
                host=self.host, port=self.port,
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise RsyncError("SSH authentication as %s failed: %s" % (self.where, exc), host=self.host,
                             port=self.port) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise RsyncError(
                    "the SSH host key of %s:%d is not in %s; unknown host keys are never accepted. Add the "
                    "key (for example with ansible.builtin.known_hosts) after checking it out of band."
                    % (self.host, self.port, known),
                    host=self.host, port=self.port,
                ) from None
            raise RsyncError("SSH to %s failed: %s" % (self.where, exc), host=self.host, port=self.port) from None
        except (OSError, EOFError) as exc:
            client.close()
            raise RsyncError("cannot connect to %s: %s" % (self.where, exc), host=self.host,
                             port=self.port) from None
        self.client = client
        return self.sftp

    def close(self):
        for thing in (self.sftp, self.client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # pylint: disable=broad-except
                    pass  # closing a broken connection must not hide the real error
        self.sftp = self.client = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc_info):
        self.close()


def sftp_session_from_params(params):
    return SftpSession(
        params["host"],
        params["user"],
        port=params["port"],
        key_file=params.get("key_file"),
        known_hosts_file=params.get("known_hosts_file"),
        connect_timeout=params["connect_timeout"],
        server_alive_interval=params["server_alive_interval"],
    )


def _sftp_error(action, path, exc):
    return RsyncError("cannot %s %s over SFTP: %s" % (action, path, exc), path=path)


def _raw_path(path):
    """The bytes of a name carried as str with surrogate escapes."""
    return path.encode("utf-8", "surrogateescape")


def sftp_listdir(sftp, path):
    """``SFTPClient.listdir_attr`` with every name kept exactly (str with surrogate escapes).

    paramiko's own listing decodes names as strict UTF-8 and fails on the first that is
    not; the SFTP protocol (version 3) carries names as plain bytes, so they are read as such.
    """
    # pylint: disable=protected-access
    kind, msg = sftp._request(paramiko.sftp.CMD_OPENDIR, _raw_path(path))
    if kind != paramiko.sftp.CMD_HANDLE:
        raise paramiko.SFTPError("Expected handle")
    handle = msg.get_binary()
    entries = []
    while True:
        try:
            kind, msg = sftp._request(paramiko.sftp.CMD_READDIR, handle)
        except EOFError:  # the end of the listing
            break
        if kind != paramiko.sftp.CMD_NAME:
            raise paramiko.SFTPError("Expected name response")
        for _index in range(msg.get_int()):
            name = msg.get_string().decode("utf-8", "surrogateescape")
            longname = msg.get_string().decode("utf-8", "surrogateescape")
            attr = paramiko.SFTPAttributes._from_msg(msg, name, longname)
            if name not in (".", ".."):
                entries.append(attr)
    sftp._request(paramiko.sftp.CMD_CLOSE, handle)
    return entries


def list_epn_folders(sftp, directory, epn_pattern=DEFAULT_EPN_PATTERN):
    """Return ``(epns, rejected)``: sub-folders of ``directory`` that are safe EPN names, and
    ``{"epn", "reason"}`` for the others. Files and symbolic links are not EPNs."""
    pattern = _compile_pattern(epn_pattern)
    try:
        entries = sftp_listdir(sftp, directory)
    except (OSError, EOFError, socket.timeout) as exc:
        raise _sftp_error("list", directory, exc) from None
    epns, rejected = [], []
    for entry in entries:
        if entry.st_mode is None or not stat.S_ISDIR(entry.st_mode):
            continue
        problem = _name_problem(entry.filename, pattern)
        if problem:
            rejected.append({"epn": entry.filename, "reason": "EPN %s" % problem})
        else:
            epns.append(entry.filename)
    return sorted(epns), sorted(rejected, key=lambda item: item["epn"])


def walk_epn_folder(sftp, path, keep=rsync_default_filter):
    """Walk one EPN folder: total size in bytes and number of regular files, the newest
    modification time of its files and folders, and the folders that could not be read.

    Names ``keep`` refuses (by default what rsync's ``--exclude=.*`` skips) are not counted
    and not descended into; symbolic links are not followed.
    """
    try:
        top = sftp.stat(_raw_path(path))
    except (OSError, EOFError, socket.timeout) as exc:
        raise _sftp_error("read", path, exc) from None
    size = count = 0
    newest = top.st_mtime
    errors = []
    stack = [path]
    while stack:
        directory = stack.pop()
        try:
            entries = sftp_listdir(sftp, directory)
        except (OSError, socket.timeout) as exc:
            errors.append("%s: %s" % (directory, exc))
            continue
        except EOFError as exc:
            raise _sftp_error("list", directory, exc) from None
        for entry in entries:
            if not keep(entry.filename) or entry.st_mode is None:
                continue
            if entry.st_mtime is not None and (newest is None or entry.st_mtime > newest):
                newest = entry.st_mtime
            if stat.S_ISDIR(entry.st_mode):
                stack.append(directory.rstrip("/") + "/" + entry.filename)
            elif stat.S_ISREG(entry.st_mode):
                size += entry.st_size or 0
                count += 1
    return {"size_bytes": size, "file_count": count, "newest_mtime": float(newest) if newest is not None else None,
            "errors": errors}


def walk_epn_folders(params, directory, epns, workers=1):
    """Walk each EPN folder under ``directory``, ``workers`` SFTP sessions at once.

    Returns ``{epn: walk_epn_folder(...) result}``. Each session is its own SSH connection
    (paramiko's clients are not shared between threads).
    """
    if workers < 1:
        raise ConfigError("workers must be at least 1", option="workers")
    pending = list(epns)
    results = {}
    lock = threading.Lock()

    def take():
        with lock:
            return pending.pop(0) if pending else None

    def work():
        with sftp_session_from_params(params) as sftp:
            while True:
                epn = take()
                if epn is None:
                    return
                results[epn] = walk_epn_folder(sftp, directory.rstrip("/") + "/" + epn)

    count = min(workers, len(pending))
    if count <= 1:
        if pending:
            work()
        return results
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(work) for _index in range(count)]
        for future in futures:
            future.result()
    return results


# -- epn_alert's plan -------------------------------------------------------------------------

def _person(value):
    if not isinstance(value, dict):
        return None
    return {key: value.get(key) if isinstance(value.get(key), str) else "" for key in ("first_names", "last_name", "email")}


def visit_details(visits):
    """Per EPN, the details of its latest-starting visit, with the data scientists of all its visits."""
    grouped = {}
    for visit in visits:
        if isinstance(visit, dict) and isinstance(visit.get("epn"), str):
            grouped.setdefault(visit["epn"], []).append(visit)
    details = {}
    for epn, group in grouped.items():
        group.sort(key=lambda v: str(v.get("start_time") or ""), reverse=True)
        latest = group[0]
        scientists = []
        for visit in group:
            listed = visit.get("data_scientists") if isinstance(visit.get("data_scientists"), list) else []
            for person in (_person(p) for p in listed):
                if person and person not in scientists:
                    scientists.append(person)
        details[epn] = {
            "epn": epn,
            "start_time": latest.get("start_time"),
            "end_time": latest.get("end_time"),
            "equipment_id": latest.get("equipment_id"),
            "principal_scientist": _person(latest.get("principal_scientist")),
            "data_scientists": scientists,
        }
    return details


def plan_alert(listed, epn_cap_map, visits, alerted, now, realert_after_days):
    """Decide which unknown EPNs to alert about, as a pure function.

    ``listed`` are the EPN folders seen, ``alerted`` maps EPN to the epoch seconds of its last
    alert (or None), ``now`` is epoch seconds. An EPN is unknown when ``epn_cap_map`` has no
    project for it; it is due when never alerted, or alerted ``realert_after_days`` days ago
    or more (0 never alerts again). Returns ``unknown``, ``due``, ``suppressed`` (with
    ``alerted_at``), ``with_details`` (due EPNs with portal visit details, sorted) and
    ``without_details`` (the other due EPNs, sorted).
    """
    if isinstance(realert_after_days, bool) or not isinstance(realert_after_days, (int, float)) or realert_after_days < 0:
        raise ConfigError("realert_after_days must be 0 or more", option="realert_after_days")
    unknown = sorted(epn for epn in set(listed) if project_for_epn(epn, epn_cap_map) is None)
    details = visit_details(visits)
    due, suppressed = [], []
    for epn in unknown:
        last = (alerted or {}).get(epn)
        if last is None or (realert_after_days > 0 and now - last >= realert_after_days * 86400):
            due.append(epn)
        else:
            suppressed.append({"epn": epn, "alerted_at": datetime.datetime.fromtimestamp(
                last, datetime.timezone.utc).isoformat(timespec="seconds")})
    return {
        "unknown": unknown,
        "due": due,
        "suppressed": suppressed,
        "with_details": [details[epn] for epn in due if epn in details],
        "without_details": [epn for epn in due if epn not in details],
    }
