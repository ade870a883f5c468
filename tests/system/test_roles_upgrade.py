# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Upgrades and rollbacks: the collection tarball deployed last is the one installed on the host, older or
newer; the Python requirements the role installs are the versions the collection is tested with."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess

import yaml

from roles_support import BIN, COLLECTION_ROOT, LeanHosts


def build(version, workdir):
    """A tarball of this collection with its galaxy.yml saying ``version``."""
    source = os.path.join(workdir, "src-" + version)
    shutil.copytree(COLLECTION_ROOT, source, ignore=shutil.ignore_patterns("tests", "benchmarks", "demo", "docs",
                                                                           ".venv", "__pycache__"))
    with open(os.path.join(source, "galaxy.yml")) as handle:
        galaxy = yaml.safe_load(handle)
    galaxy["version"] = version
    with open(os.path.join(source, "galaxy.yml"), "w") as handle:
        yaml.safe_dump(galaxy, handle)
    out = os.path.join(workdir, "dist-" + version)
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--force", "--output-path", out,
                    source], check=True, capture_output=True, text=True)
    return glob.glob(os.path.join(out, "scidata-replication-*.tar.gz"))[0]


def test_the_tarball_deployed_last_is_installed_rollback_included(sshd, tmp_path):
    older, newer = build("0.1.0", str(tmp_path)), build("0.1.1", str(tmp_path))
    hosts = LeanHosts(sshd, ["h"])
    try:
        for sub in ("opt/dist", "opt/collections", "opt/venv/bin"):
            os.makedirs(hosts.path("h", sub), exist_ok=True)
        # The host's virtual environment, as the install step leaves it (pip is not needed for this test).
        os.symlink(os.path.join(BIN, "ansible-galaxy"), hosts.path("h", "opt/venv/bin/ansible-galaxy"))
        play = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "scidata.replication.transfer_host"}]}]
        manifest = hosts.path("h", "opt/collections/ansible_collections/scidata/replication/MANIFEST.json")

        def deploy(tarball):
            rc, output = hosts.run(play, "--tags", "transfer_host_collection", name="deploy", host_vars={"h": {
                "transfer_host_install_collection": True, "transfer_host_collection_tarball": tarball}})
            assert rc == 0, output[-4000:]
            with open(manifest) as handle:
                return json.load(handle)["collection_info"]["version"], output

        assert deploy(older)[0] == "0.1.0"
        assert deploy(newer)[0] == "0.1.1"
        version, output = deploy(older)  # rollback
        assert version == "0.1.0", output[-3000:]
        version, output = deploy(older)
        assert version == "0.1.0" and re.search(r"h\s+: ok=\d+\s+changed=0 ", output), output[-3000:]
    finally:
        hosts.cleanup()


def pins(lines):
    found = {}
    for line in lines:
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)==([^\s#]+)", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_host_requirements_are_the_tested_pins():
    """The role pins what tests/requirements.txt pins (the one list of tested versions); ansible-core is
    the last release line that runs on the hosts' Python 3.11."""
    with open(os.path.join(COLLECTION_ROOT, "tests", "requirements.txt")) as handle:
        tested = pins(handle)
    role = {}
    for name in ("transfer_host", "dashboard"):
        with open(os.path.join(COLLECTION_ROOT, "roles", name, "defaults", "main.yml")) as handle:
            defaults = yaml.safe_load(handle)
        role.update(pins(defaults["%s_python_packages" % name]))
    assert role and all(tested[name] == version for name, version in role.items()), (role, tested)
    with open(os.path.join(COLLECTION_ROOT, "meta", "ee-requirements.txt")) as handle:
        needed = {re.split(r"[<>=\s#]", line.strip())[0].lower() for line in handle if line.strip() and line[0] != "#"}
    assert needed == set(role), (needed, role)
    with open(os.path.join(COLLECTION_ROOT, "roles", "transfer_host", "defaults", "main.yml")) as handle:
        assert re.match(r"^ansible-core==2\.19\.\d+$", yaml.safe_load(handle)["transfer_host_ansible_requirement"])
