#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
module: state_schema
short_description: Ensure the replication state database exists with a current schema
version_added: 1.0.0
description:
  - Creates the state database shared by every module of this collection (SQLite file or PostgreSQL
    database) and applies the pending schema migrations.
  - Every other module migrates the schema by itself when it runs; use this module to prepare a
    database ahead of time, for example from a provisioning role, and to see the schema version.
  - Two runs against the same database never migrate at the same time; the second one waits and
    then finds nothing to do.
extends_documentation_fragment:
  - scidata.replication._state
  - scidata.replication._attributes
  - scidata.replication._attributes.actiongroup_state
attributes:
  check_mode:
    support: full
    details:
      - Reports the migrations that would be applied; creates and writes nothing.
  diff_mode:
    support: full
  idempotent:
    support: full
options: {}
author:
  - Scidata Replication maintainers (@scidata)
"""

EXAMPLES = r"""
- name: Prepare the default SQLite state database of the current user
  scidata.replication.state_schema:

- name: Prepare a PostgreSQL state database, password from the environment or ~/.pgpass
  scidata.replication.state_schema:
    state_db: postgresql://replication@db.example.org/replication

- name: Set the database once for every module that keeps state
  module_defaults:
    group/scidata.replication.state:
      state_db: /var/lib/scidata-replication/state.db
  block:
    - name: Prepare it
      scidata.replication.state_schema:
"""

RETURN = r"""
backend:
  description: The database backend in use.
  returned: success
  type: str
  sample: sqlite
schema_version:
  description: The schema version after the run (in check mode, the version the run would reach).
  returned: success
  type: int
  sample: 1
previous_version:
  description: The schema version before the run; V(0) for a new database.
  returned: success
  type: int
  sample: 0
applied:
  description: The migrations applied by this run, or that would be applied in check mode.
  returned: success
  type: list
  elements: dict
  contains:
    version:
      description: Migration number.
      type: int
    description:
      description: What the migration does.
      type: str
  sample: [{"version": 1, "description": "initial schema"}]
locked:
  description: True when another run held the lock and nothing was done.
  returned: when another run holds the lock
  type: bool
"""

import os

from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python

try:
    from ansible_collections.scidata.replication.plugins.module_utils._module import ReplicationModule
    from ansible_collections.scidata.replication.plugins.module_utils._state import (
        LATEST_VERSION,
        MIGRATIONS,
        StateDB,
        parse_state_db,
    )
except SyntaxError:
    # A Python too old to compile the collection's code gets the same clear refusal as one that can.
    refuse_unsupported_python()
    raise


def ensure_schema(module):
    dialect, target = parse_state_db(module.params["state_db"])
    if module.check_mode and dialect == "sqlite" and not os.path.exists(target):
        previous, pending, after = 0, [(v, d) for v, d, _statements in MIGRATIONS], LATEST_VERSION
    else:
        db = StateDB(module.params["state_db"], password=module.params["state_db_password"])
        try:
            previous = db.schema_version()
            pending = db.pending_migrations()
            if module.check_mode:
                after = LATEST_VERSION
            else:
                # Another process may apply some of them while this one waits for the lock.
                applied = set(db.migrate())
                pending = [(v, d) for v, d in pending if v in applied]
                after = db.schema_version()
        finally:
            db.close()
    result = dict(
        changed=bool(pending),
        backend=dialect,
        previous_version=previous,
        schema_version=after,
        applied=[dict(version=v, description=d) for v, d in pending],
    )
    if module.diff_mode:
        result["diff"] = dict(before=dict(schema_version=previous), after=dict(schema_version=after))
    return result


def main():
    module = ReplicationModule(argument_spec={}, supports_check_mode=True)
    module.run(ensure_schema, job=module.params["state_db"])


if __name__ == "__main__":
    main()
