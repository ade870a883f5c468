# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make live-check`: run tests/live/live_check.yml against the real Globus service.

Opt-in, never part of `make test`: it needs the user's own confidential client and two collections
they name. Without them it says what is missing and exits 0 (skipped). The copies go to a new
directory per run under SCIDATA_LIVE_DESTINATION_PATH, which the check leaves in place; the local
work directory (state database, index) is kept only when the check fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTION_ROOT = os.path.dirname(os.path.dirname(HERE))
COLLECTIONS_PATH = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_ROOT)))

# The public Globus tutorial collections (mapped collections: they need data_access consent) hold
# these files under /share/godata/.
TUTORIAL_FILES = ["file1.txt", "file2.txt", "file3.txt"]
REQUIRED = {
    "GLOBUS_CLIENT_ID": "the client id of your confidential app (app.globus.org > Settings > Developers)",
    "GLOBUS_CLIENT_SECRET": "a client secret of that app",
    "SCIDATA_LIVE_SOURCE": "the source collection id (Globus Tutorial Collection 1: 6c54cade-bde5-45c1-bdea-f4bd71dba2cc)",
    "SCIDATA_LIVE_DESTINATION": "the destination collection id (Tutorial Collection 2: 31ce9ba0-176d-45a5-add3-f37d233ba47d)",
}
OPTIONAL = {
    "SCIDATA_LIVE_SOURCE_PATH": ("/share/godata", "directory on the source collection to copy files from"),
    "SCIDATA_LIVE_FILES": (",".join(TUTORIAL_FILES), "comma-separated names of files in that directory"),
    "SCIDATA_LIVE_DESTINATION_PATH": ("/~/scidata-live-check", "directory on the destination; each run adds one below it"),
    "SCIDATA_LIVE_DATA_ACCESS": ("both collections", "comma-separated ids of mapped collections that need data_access consent"),
    "SCIDATA_LIVE_SOURCE_DIR": ("a stand-in tree", "a local view of the source directory, which dir_trie_sync scans"),
    "SCIDATA_LIVE_POLL_SECONDS": ("10", "seconds between checks while waiting for tasks"),
}


def usage(missing):
    lines = ["SKIPPED: the live check talks to the real Globus service and needs:"]
    lines += ["  %-30s %s" % (name, REQUIRED[name]) for name in missing]
    lines += ["Optional:"]
    lines += ["  %-30s %s (default: %s)" % (name, text, default) for name, (default, text) in OPTIONAL.items()]
    lines += ["The app's identity needs read access to the source and write access to the destination."]
    return "\n".join(lines)


def setting(name):
    """An optional setting; None when it is not set (an empty value counts as set)."""
    return os.environ.get(name)


def names(text):
    return [name.strip() for name in text.split(",") if name.strip()]


def stand_in_tree(workdir, files):
    """Local files with the source directory's names: dir_trie_sync reads names, sizes and times
    here and Globus copies the collection's own files of those names."""
    root = os.path.join(workdir, "source")
    os.makedirs(root)
    for name in files:
        with open(os.path.join(root, name), "w") as handle:
            handle.write("stand-in for %s on the source collection\n" % name)
    return root


def main():
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        print(usage(missing))
        return 0
    service = os.environ.get("GLOBUS_SDK_SERVICE_URL_TRANSFER")
    print("live check against %s" % (service or "the Globus service (transfer.api.globus.org)"))
    workdir = tempfile.mkdtemp(prefix="scidata-live-check-")
    source, destination = os.environ["SCIDATA_LIVE_SOURCE"], os.environ["SCIDATA_LIVE_DESTINATION"]
    files = names(setting("SCIDATA_LIVE_FILES") or ",".join(TUTORIAL_FILES))
    data_access = setting("SCIDATA_LIVE_DATA_ACCESS")
    poll_seconds = max(int(setting("SCIDATA_LIVE_POLL_SECONDS") or 10), 1)
    run = time.strftime("run-%Y%m%dT%H%M%SZ", time.gmtime())
    variables = {
        "live_workdir": workdir,
        "live_source_collection": source,
        "live_destination_collection": destination,
        "live_data_access_collections": [source, destination] if data_access is None else names(data_access),
        "live_source_path": (setting("SCIDATA_LIVE_SOURCE_PATH") or "/share/godata").rstrip("/") + "/",
        "live_destination_path": "%s/%s" % ((setting("SCIDATA_LIVE_DESTINATION_PATH") or "/~/scidata-live-check").rstrip("/"),
                                            run),
        "live_files": files,
        "live_src_dir": setting("SCIDATA_LIVE_SOURCE_DIR") or stand_in_tree(workdir, files),
        "live_poll_seconds": poll_seconds,
        "live_poll_retries": max(1800 // poll_seconds, 10),  # up to half an hour for the tasks
    }
    variables_file = os.path.join(workdir, "variables.json")
    with open(variables_file, "w") as handle:
        json.dump(variables, handle)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
            "-e", "@" + variables_file, "-e", "ansible_python_interpreter=" + sys.executable,
            os.path.join(HERE, "live_check.yml")]
    code = subprocess.call(argv, env=env)
    if code == 0:
        with open(os.path.join(workdir, "summary.json")) as handle:
            print("live check passed: %s" % handle.read())
        shutil.rmtree(workdir)
    else:
        print("live check FAILED (exit %d); its work directory is kept in %s" % (code, workdir))
    return code


if __name__ == "__main__":
    sys.exit(main())
