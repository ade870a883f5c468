# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Collections and tasks, and how they render as Transfer API documents.

Field names, JSON types and the placement of nulls follow recorded service responses
(globus_sdk's ``testing/data/transfer`` fixtures and later captures of ``GET /task/<id>``)
and the Task Management and Task Events pages of docs.globus.org.
"""

from __future__ import annotations

import json
import uuid

from .util import iso, now

TASK_DEFAULT_DEADLINE = 24 * 3600  # docs: transfer and delete tasks start with a 24 h deadline
PAUSED_DEADLINE = 90 * 24 * 3600  # docs: a paused task gets a deadline 90 days out


class Collection:
    """A configured collection whose paths map below a local ``root`` directory."""

    def __init__(self, cfg, server_host="127.0.0.1", server_port=0):
        self.id = str(uuid.UUID(str(cfg["id"])))
        self.display_name = cfg.get("display_name") or f"Emulated collection {self.id[:8]}"
        self.root = cfg["root"]
        self.entity_type = cfg.get("entity_type", "GCSv5_mapped_collection")
        self.requires_consent = bool(cfg.get("requires_data_access_consent", False))
        self.owner_string = cfg.get("owner_string") or "emulator-admin@globusid.org"
        self.owner_id = str(uuid.uuid5(uuid.NAMESPACE_URL, self.owner_string))
        self.legacy_name = f"u_{self.owner_string.split('@')[0]}#{self.id}"
        self.server_host = server_host
        self.server_port = server_port

    @property
    def is_gcp(self):
        return self.entity_type.startswith("GCP_")

    def endpoint_doc(self):
        """``GET /endpoint/<id>``: the fixture's keys plus the GCSv5-era collection fields."""
        gcp = self.is_gcp
        return {
            "DATA_TYPE": "endpoint",
            "id": self.id,
            "display_name": self.display_name,
            "organization": "scidata.replication emulator",
            "department": None,
            "keywords": None,
            "username": self.owner_string.split("@")[0],
            "owner_id": self.owner_id,
            "owner_string": self.owner_string,
            "description": f"Emulated {self.entity_type} rooted at a local directory",
            "contact_email": None,
            "info_link": None,
            "entity_type": self.entity_type,
            "gcs_version": None if gcp else "5.4.80",
            "gcs_manager_url": None if gcp else f"https://{self.server_host}",
            "https_server": None if gcp else f"https://{self.server_host}",
            "high_assurance": False,
            "authentication_assurance_timeout": None,
            "subscription_id": None,
            "public": False,
            "french_english_bilingual": False,
            "is_globus_connect": gcp,
            "globus_connect_setup_key": None,
            "gcp_connected": True if gcp else None,
            "gcp_paused": False if gcp else None,
            "s3_url": None,
            "s3_owner_activated": False,
            "host_endpoint_id": None,
            "host_path": None,
            "disable_verify": False,
            "disable_anonymous_writes": False,
            "force_verify": False,
            "force_encryption": False,
            "mfa_required": False,
            "myproxy_server": None,
            "myproxy_dn": None,
            "non_functional": False,
            "non_functional_endpoint_display_name": None,
            "non_functional_endpoint_id": None,
            "oauth_server": None,
            "default_directory": None,
            "activated": True,
            "expires_in": -1,
            "expire_time": None,
            "shareable": True,
            "acl_available": False,
            "acl_editable": False,
            "in_use": False,
            "DATA": [
                {
                    "DATA_TYPE": "server",
                    "hostname": self.server_host,
                    "uri": f"gsiftp://{self.server_host}:{self.server_port}",
                    "port": self.server_port,
                    "scheme": "gsiftp",
                    "id": 1,
                    "subject": f"/CN={self.server_host}",
                }
            ],
        }


def event(code, description, details, is_error):
    """An event document; ``details`` is a string (JSON text for STARTED and PROGRESS)."""
    if not isinstance(details, str):
        details = json.dumps(details, indent=2)
    return {"DATA_TYPE": "event", "code": code, "description": description, "details": details,
            "is_error": is_error, "time": iso(now())}


def pause_rule(collection, message, task_type):
    """A ``pause_rule_limited`` document: what a task owner sees of the rule that paused a task."""
    return {
        "DATA_TYPE": "pause_rule_limited",
        "id": str(uuid.uuid4()),
        "message": message,
        "start_time": iso(now()),
        "endpoint_id": collection.id,
        "endpoint_display_name": collection.display_name,
        "identity_id": None,  # the rule applies to every user of the collection
        "pause_ls": False,
        "pause_mkdir": False,
        "pause_rename": False,
        "pause_symlink": False,
        "pause_task_delete": task_type == "DELETE",
        "pause_task_transfer_delete": False,
        "pause_task_transfer_read": task_type == "TRANSFER",
    }


class Task:
    """A submitted transfer or delete and everything the service records about it."""

    def __init__(self, seq, kind, grant, submission_id, source, destination, items, options, label, deadline):
        self.seq = seq
        self.task_id = str(uuid.uuid1())
        self.type = kind  # "TRANSFER" or "DELETE"
        self.owner = grant.identity
        self.client_id = grant.client_id
        self.submission_id = submission_id
        self.source = source
        self.destination = destination
        self.items = items
        self.options = options
        self.label = label
        self.request_time = now()
        self.user_deadline = deadline is not None
        self.deadline = deadline if deadline is not None else self.request_time + TASK_DEFAULT_DEADLINE
        self.completion_time = None
        self.status = "ACTIVE"
        # phase is the emulator's scheduling state: queued -> running -> done, with
        # paused / inactive parking the task without a worker slot.
        self.phase = "queued"
        self.is_paused = False
        self.problem = None  # (code, short description, details) while an error is being retried
        self.inactive_code = None
        self.fatal_error = None
        self.cancel_requested = False
        self.pause_request = None
        self.pause_rule = None  # while paused: the pause_rule_limited document behind it
        self.discard = False
        self.files = 0
        self.directories = 0
        self.symlinks = 0
        self.files_skipped = 0
        self.files_transferred = 0
        self.bytes_transferred = 0
        self.bytes_checksummed = 0
        self.total_estimated_bytes = 0
        self.faults = 0
        self.sub_total = len(items)
        self.sub_succeeded = 0
        self.sub_failed = 0
        self.sub_canceled = 0
        self.sub_expired = 0
        self.sub_skipped = 0
        self.events = []  # oldest first; served newest first
        self.successful = []
        self.skipped = []
        self.plan = None  # list of operations, built on the first run
        self.cursor = 0
        self.rules = None  # fault rules applied to this task
        self.first_start = None
        self.last_progress = None

    # ------------------------------------------------------------ state helpers

    @property
    def done(self):
        return self.phase == "done"

    def add_event(self, code, description, details, is_error):
        self.events.append(event(code, description, details, is_error))

    def finish(self, status, fatal=None):
        """Move to a terminal state; remaining subtasks are booked like the service books them."""
        self.status = status
        self.phase = "done"
        self.completion_time = now()
        self.is_paused = False
        self.problem = None
        self.inactive_code = None
        self.fatal_error = fatal
        pending = self.sub_pending
        if status == "FAILED" and fatal:
            if fatal["code"] == "CANCELED":
                self.sub_canceled += pending
            elif fatal["code"] == "EXPIRED":
                self.sub_expired += pending
            else:
                self.sub_failed += 1 if pending else 0
                self.sub_canceled += max(pending - 1, 0)

    @property
    def sub_pending(self):
        return max(self.sub_total - self.sub_succeeded - self.sub_failed - self.sub_canceled
                   - self.sub_expired - self.sub_skipped, 0)

    def effective_rate(self):
        if not self.first_start or not self.bytes_transferred:
            return 0
        end = self.completion_time or now()
        return int(self.bytes_transferred / max(end - self.first_start, 1e-3))

    def nice(self):
        """(nice_status, short_description, details, expires_in, is_ok) per the task document."""
        if self.done:
            return None, None, None, None, None
        # The tuple() calls let pylint see past the None these attributes start as.
        if self.status == "INACTIVE":
            code, desc, details = tuple(self.inactive_code)
            return code, desc, details, -1, False
        if self.is_paused:
            code, desc, details = self.problem or ("PAUSED", "paused", None)
            return code, desc, details, -1, False
        if self.problem:
            code, desc, details = tuple(self.problem)
            return code, desc, details, 1, False
        if self.phase == "queued":
            return "Queued", "Queued", None, -1, True
        return "OK", "OK", None, -1, True

    # ------------------------------------------------------------ documents

    def doc(self, with_data_type=True):
        nice_status, short, details, expires_in, is_ok = self.nice()
        src, dst = self.source, self.destination
        doc = {
            "DATA_TYPE": "task",
            "bytes_checksummed": self.bytes_checksummed,
            "bytes_transferred": self.bytes_transferred,
            "canceled_by_admin": None,
            "canceled_by_admin_message": None,
            "command": "API 0.10",
            "completion_time": iso(self.completion_time),
            "deadline": iso(self.deadline),
            "delete_destination_extra": bool(self.options.get("delete_destination_extra", False)),
            "destination_base_path": None,
            "destination_endpoint": dst.legacy_name if dst else None,
            "destination_endpoint_display_name": dst.display_name if dst else None,
            "destination_endpoint_id": dst.id if dst else None,
            "destination_local_user": self.options.get("destination_local_user"),
            "destination_local_user_status": None,
            "directories": self.directories,
            "effective_bytes_per_second": self.effective_rate(),
            "encrypt_data": bool(self.options.get("encrypt_data", False)),
            "fail_on_quota_errors": bool(self.options.get("fail_on_quota_errors", False)),
            "fatal_error": dict(self.fatal_error) if self.fatal_error else None,
            "faults": self.faults,
            "files": self.files,
            "files_skipped": self.files_skipped,
            "files_transferred": self.files_transferred,
            "filter_rules": self.options.get("filter_rules"),
            "history_deleted": False,
            "is_ok": is_ok,
            "is_paused": self.is_paused,
            "label": self.label,
            "nice_status": nice_status,
            "nice_status_details": details,
            "nice_status_expires_in": expires_in,
            "nice_status_short_description": short,
            "owner_id": self.owner.id,
            "preserve_timestamp": bool(self.options.get("preserve_timestamp", False)),
            "recursive_symlinks": "ignore",
            "request_time": iso(self.request_time),
            "skip_source_errors": bool(self.options.get("skip_source_errors", False)),
            "source_base_path": None,
            "source_endpoint": src.legacy_name,
            "source_endpoint_display_name": src.display_name,
            "source_endpoint_id": src.id,
            "source_local_user": self.options.get("source_local_user"),
            "source_local_user_status": None,
            "status": self.status,
            "subtasks_canceled": self.sub_canceled,
            "subtasks_expired": self.sub_expired,
            "subtasks_failed": self.sub_failed,
            "subtasks_pending": self.sub_pending,
            "subtasks_retrying": 1 if (self.problem and not self.is_paused and not self.done) else 0,
            "subtasks_skipped_errors": self.sub_skipped,
            "subtasks_succeeded": self.sub_succeeded,
            "subtasks_total": self.sub_total,
            "symlinks": self.symlinks,
            "sync_level": self.options.get("sync_level"),
            "task_id": self.task_id,
            "total_estimated_bytes": self.total_estimated_bytes,
            "type": self.type,
            "username": self.owner.username,
            "verify_checksum": bool(self.options.get("verify_checksum", self.type == "TRANSFER")),
        }
        if not with_data_type:
            del doc["DATA_TYPE"]
        return doc

    def pause_info_doc(self):
        """``GET /task/<id>/pause_info``: the rules pausing the task now (none once it runs again)."""
        rules = [dict(self.pause_rule)] if self.is_paused and self.pause_rule else []
        return {"DATA_TYPE": "pause_info_limited", "pause_rules": rules,
                "source_pause_message": None, "destination_pause_message": None,
                "source_pause_message_share": None, "destination_pause_message_share": None}

    def admin_doc(self):
        """Everything, for test assertions (``GET /_emulator/tasks``)."""
        doc = self.doc()
        doc.update({
            "submission_id": self.submission_id,
            "client_id": self.client_id,
            "owner_username": self.owner.username,
            "phase": self.phase,
            "items": self.items,
            "options": self.options,
            "events": list(reversed(self.events)),
            "successful_transfers": list(self.successful),
            "skipped_errors": list(self.skipped),
        })
        return doc
