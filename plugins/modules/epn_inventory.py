#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
module: epn_inventory
short_description: Record the synchrotron EPN folders on an SFTP server in the state database
version_added: 1.0.0
description:
  - Walks each EPN folder under C({src_prefix}/{beamline}) on O(host) over SFTP and records, per EPN, its path, the
    total size in bytes and the number of its regular files, and the newest modification time of its files and
    folders in the state database. This is the queue that M(scidata.replication.epn_rsync) works through with
    O(scidata.replication.epn_rsync#module:from_db=true). It does what as-walker did, without its bugs.
  - Counts follow what epn_rsync transfers by default. Names starting with C(.) are skipped (except C(.info)), and
    symbolic links are neither counted nor followed.
  - The upsert is idempotent; a run that finds nothing new changes nothing. An EPN recorded as synced whose content
    grew or changed since is put back in the queue (RV(requeued)).
  - An EPN folder that could not be read completely is not recorded; it is listed in RV(incomplete).
  - SFTP uses paramiko with the host keys in O(known_hosts_file) and C(RejectPolicy), so an unknown or changed host
    key is refused, never added.
extends_documentation_fragment:
  - scidata.replication._epn
  - scidata.replication._state
  - scidata.replication._attributes
  - scidata.replication._attributes.actiongroup_state_epn
attributes:
  check_mode:
    support: full
    details:
      - Walks the folders and reports what would be recorded; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  epns:
    description:
      - Walk only these EPN folders. By default every EPN folder found is walked.
    type: list
    elements: str
  workers:
    description:
      - How many SFTP sessions walk folders at once (each is its own SSH connection).
    type: int
    default: 1
requirements:
  - paramiko on the target.
seealso:
  - module: scidata.replication.epn_rsync
author:
  - Scidata Replication maintainers (@scidata)
"""

EXAMPLES = r"""
- name: Record every EPN folder of the MX2 beamline, four SFTP sessions at once
  scidata.replication.epn_inventory:
    host: sftp.synchrotron.org.au
    user: massive
    key_file: /etc/scidata-replication/id_ed25519
    known_hosts_file: /etc/scidata-replication/known_hosts
    beamline: MX2
    workers: 4
    state_db: postgresql://replication@db.example.org/replication

- name: Then sync the newest 30 of them
  scidata.replication.epn_rsync:
    from_db: true
    order: DESC
    limit: 30
    host: sftp.synchrotron.org.au
    user: massive
    key_file: /etc/scidata-replication/id_ed25519
    known_hosts_file: /etc/scidata-replication/known_hosts
    epn_cap_map: "{{ epn_cap_map }}"
    dest_root: /projects
    state_db: postgresql://replication@db.example.org/replication
"""

RETURN = r"""
epns:
  description: One entry per EPN folder walked completely.
  returned: success
  type: list
  elements: dict
  contains:
    epn:
      description: The EPN.
      type: str
    path:
      description: Its folder on O(host).
      type: str
    size_bytes:
      description: Total size of its regular files.
      type: int
    file_count:
      description: Number of its regular files.
      type: int
    newest_mtime:
      description: Newest modification time of its files and folders, seconds since the epoch.
      type: float
    change:
      description: V(added), V(updated) or V(unchanged) in the database.
      type: str
  sample:
    - epn: 12345a
      path: /data/MX2/12345a
      size_bytes: 53687091200
      file_count: 1804
      newest_mtime: 1741568400.0
      change: added
added:
  description: EPNs recorded for the first time.
  returned: success
  type: list
  elements: str
  sample: [12345a]
updated:
  description: EPNs whose path, size, file count or newest time changed.
  returned: success
  type: list
  elements: str
  sample: []
unchanged:
  description: Number of EPNs whose record was already up to date.
  returned: success
  type: int
  sample: 213
requeued:
  description: EPNs recorded as synced whose content changed since; they are pending again.
  returned: success
  type: list
  elements: str
  sample: []
missing:
  description: EPNs named in O(epns) without a folder on O(host).
  returned: success
  type: list
  elements: str
  sample: []
incomplete:
  description: EPN folders that could not be read completely (not recorded), with the first errors.
  returned: success
  type: list
  elements: dict
  sample: [{epn: 12346b, errors: ["/data/MX2/12346b/raw: Permission denied"]}]
rejected:
  description: Folder names refused by the EPN name rules (one that is not valid UTF-8 is shown with C(\xNN)
    escapes), with the reason.
  returned: success
  type: list
  elements: dict
  sample: [{epn: "-e sh", reason: "EPN starts with '-'"}]
total_bytes:
  description: Sum of RV(epns[].size_bytes).
  returned: success
  type: int
  sample: 53687091200
total_files:
  description: Sum of RV(epns[].file_count).
  returned: success
  type: int
  sample: 1804
msg:
  description: A summary.
  returned: always
  type: str
  sample: 214 EPN folders walked; 1 added, 0 updated, 213 unchanged
"""

import time

from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python

try:
    from ansible_collections.scidata.replication.plugins.module_utils._epn import (
        SSH_ARGUMENT_SPEC,
        epn_directory,
        list_epn_folders,
        sftp_session_from_params,
        walk_epn_folders,
    )
    from ansible_collections.scidata.replication.plugins.module_utils._epnsync import EpnStore
    from ansible_collections.scidata.replication.plugins.module_utils._module import ReplicationModule
except SyntaxError:
    # A Python too old to compile the collection's code gets the same clear refusal as one that can.
    refuse_unsupported_python()
    raise

MAX_REPORTED_ERRORS = 10


def inventory(module):
    p = module.params
    directory = epn_directory(p["src_prefix"], p.get("beamline"))
    with sftp_session_from_params(p) as sftp:
        listed, rejected = list_epn_folders(sftp, directory, p["epn_pattern"])
    missing = []
    if p.get("epns") is not None:
        wanted = list(dict.fromkeys(p["epns"]))
        missing = [epn for epn in wanted if epn not in listed]
        listed = [epn for epn in listed if epn in set(wanted)]

    walked = walk_epn_folders(p, directory, listed, workers=p["workers"])
    found, incomplete = [], []
    for epn in listed:
        walk = walked[epn]
        if walk["errors"]:
            incomplete.append({"epn": epn, "errors": walk["errors"][:MAX_REPORTED_ERRORS]})
            continue
        found.append({"epn": epn, "beamline": p.get("beamline"), "source_path": directory.rstrip("/") + "/" + epn,
                      "size_bytes": walk["size_bytes"], "file_count": walk["file_count"],
                      "newest_mtime": walk["newest_mtime"]})
    for item in incomplete:
        module.warn("EPN %s could not be read completely and was not recorded: %s" % (
            item["epn"], "; ".join(item["errors"][:3])))

    store = EpnStore(module.state())
    existing = store.rows([item["epn"] for item in found])
    added, updated, unchanged, requeued = store.inventory_changes(found, existing)
    if not module.check_mode and (added or updated):
        store.record_inventory(found, added, updated, requeued, time.time())
    change = dict([(epn, "added") for epn in added] + [(epn, "updated") for epn in updated])
    return dict(
        changed=bool(added or updated),
        epns=[{"epn": item["epn"], "path": item["source_path"], "size_bytes": item["size_bytes"],
               "file_count": item["file_count"], "newest_mtime": item["newest_mtime"],
               "change": change.get(item["epn"], "unchanged")} for item in found],
        added=added,
        updated=updated,
        unchanged=len(unchanged),
        requeued=requeued,
        missing=missing,
        incomplete=incomplete,
        rejected=rejected,
        total_bytes=sum(item["size_bytes"] for item in found),
        total_files=sum(item["file_count"] for item in found),
        msg="%s%d EPN folders walked; %d added, %d updated, %d unchanged" % (
            "check mode: " if module.check_mode else "", len(found), len(added), len(updated), len(unchanged)),
    )


def main():
    argument_spec = dict(SSH_ARGUMENT_SPEC)
    argument_spec.update(
        epns=dict(type="list", elements="str"),
        workers=dict(type="int", default=1),
    )
    module = ReplicationModule(argument_spec=argument_spec, supports_check_mode=True)
    module.run(inventory, job="%s-%s" % (module.params["host"], module.params["state_db"]))


if __name__ == "__main__":
    main()
