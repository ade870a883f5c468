# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the scidata.replication collection. Do not use this from other collections.

from __future__ import annotations


class ModuleDocFragment(object):
    # The options every module gets from the module base (plugins/module_utils/_module.py).
    DOCUMENTATION = r"""
options:
  state_db:
    description:
      - The state database shared by every module of this collection.
      - A file path, V(sqlite:///relative/path) or V(sqlite:////absolute/path) selects SQLite, the
        embedded default, which needs no server and no extra library. Keep the file on a local
        file system, not on NFS, GPFS or Lustre.
      - V(postgresql://user@host:port/dbname) (any libpq connection URI, including
        V(postgresql:///dbname?host=/run/postgresql) and V(postgresql://?service=name)) selects
        PostgreSQL through psycopg2.
      - A URI containing a password, in its user information or as a C(password) parameter, is refused,
        because the URI appears in results and logs. Give the password in O(state_db_password),
        E(PGPASSWORD), C(~/.pgpass) or a libpq service file.
      - A libpq C(key=value) connection string is refused too; write it as a URI.
      - The schema is created and migrated automatically, except in check mode.
      - If not set, the value of E(SCIDATA_STATE_DB) is used.
    type: str
    default: ~/.local/state/scidata-replication/state.db
  state_db_password:
    description:
      - Password for a PostgreSQL O(state_db).
      - If not set, the value of E(SCIDATA_STATE_DB_PASSWORD) is used, then libpq's own
        E(PGPASSWORD), C(~/.pgpass) or service file.
    type: str
  lock_file:
    description:
      - File locked with C(flock) for the duration of a run, so that two runs of the same job never
        overlap (for example a cron job that outlasts its interval).
      - Defaults to a file named after the module and job under C(~/.cache/scidata-replication/locks) of
        the user running the module, the same for a scheduled run and one started from a login session.
      - If not set, the value of E(SCIDATA_LOCK_FILE) is used.
    type: path
  lock_timeout:
    description:
      - Seconds to wait for another run to release O(lock_file).
      - When the wait ends without the lock, the module does nothing and returns RV(ignore:locked=true)
        with C(changed=false).
    type: int
    default: 0
  log_file:
    description:
      - Append one JSON line describing each run (time, module, outcome and counters) to this file.
        Values marked C(no_log) are masked.
      - If not set, the value of E(SCIDATA_LOG_FILE) is used.
    type: path
requirements:
  - psycopg2 (C(pip install psycopg2-binary)) on the target, only for a PostgreSQL O(state_db)
notes:
  - Every run returns C(locked=true) and C(changed=false) when another run of the same job holds
    the lock.
  - In check mode the module plans on a private snapshot of O(state_db) taken when it starts (an
    in-memory copy of a SQLite file, temporary tables on PostgreSQL). It holds no lock that a real
    run would wait for, and needs memory (SQLite) or temporary space (PostgreSQL) for one copy.
  - On PostgreSQL a statement waits at most 30 seconds for a lock held by another run, then fails.
"""
