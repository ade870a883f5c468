# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The built collection tarball: what it ships, the execution-environment metadata ansible-builder reads
from it, the EE definition built from it, and one globus-sdk requirement everywhere."""

from __future__ import annotations

import filecmp
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION_ROOT = os.path.dirname(TESTS_DIR)
BIN = os.path.dirname(sys.executable)
ROLES = ("transfer_host", "state_db", "globus_replication", "dir_sync", "epn_sync", "dashboard")

# Everything the tarball may hold; anything else is a development file that build_ignore missed.
SHIPPED = re.compile(r"""^(?:
    (?:MANIFEST|FILES)\.json | README\.md | CHANGELOG\.rst | COPYING | REUSE\.toml | LICENSES/[\w.+-]+\.txt
  | changelogs/(?:changelog|config)\.yaml
  | meta/(?:runtime\.yml|execution-environment\.yml|ee-requirements\.txt|ee-bindep\.txt)
  | plugins/(?:modules|module_utils|doc_fragments)/\w+\.py
  | roles/\w+/(?:README\.md|(?:defaults|handlers|meta|tasks|templates|vars)/[\w./@-]+)
  | playbooks/(?!demo\.yml$)[\w./-]+\.yml
  | docs/[\w./-]+
  | tests/config\.yml
)$""", re.X)
REQUIRED = ["COPYING", "LICENSES/GPL-3.0-or-later.txt", "REUSE.toml", "README.md", "meta/runtime.yml",
            "meta/execution-environment.yml", "meta/ee-requirements.txt", "meta/ee-bindep.txt",
            "changelogs/changelog.yaml", "plugins/modules/globus_transfer.py", "playbooks/site.yml",
            "docs/execution-environment/execution-environment.yml"] + ["roles/%s/tasks/main.yml" % r for r in ROLES]


def requirement_lines(name):
    with open(os.path.join(COLLECTION_ROOT, "meta", name)) as handle:
        return [line.split("#")[0].strip() for line in handle if line.split("#")[0].strip()]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(out),
                    COLLECTION_ROOT], check=True, capture_output=True, text=True)
    (path,) = out.glob("scidata-replication-*.tar.gz")
    return path


@pytest.fixture(scope="module")
def installed(tarball, tmp_path_factory):
    """The tarball installed the way an execution environment build installs it."""
    root = tmp_path_factory.mktemp("installed")
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(root),
                    str(tarball)], check=True, capture_output=True, text=True)
    return root


def test_tarball_ships_the_collection_and_nothing_else(tarball):
    with tarfile.open(tarball) as archive:
        files = sorted(m.name for m in archive.getmembers() if not m.isdir())
    assert [f for f in files if not SHIPPED.match(f)] == []
    assert [f for f in REQUIRED if f not in files] == []
    with tarfile.open(tarball) as archive:
        manifest = yaml.safe_load(archive.extractfile("MANIFEST.json"))
    assert manifest["collection_info"]["license"] == ["GPL-3.0-or-later"]


def test_introspection_reads_the_ee_metadata_of_the_installed_collection(installed):
    """What every `ansible-builder build` that installs this collection runs."""
    result = subprocess.run([os.path.join(BIN, "ansible-builder"), "introspect", "--sanitize", str(installed)],
                            check=True, capture_output=True, text=True)
    found = yaml.safe_load(result.stdout)

    def requirements(kind):
        return [line.split("#")[0].strip() for line in found[kind]
                if line.endswith("# from collection scidata.replication")]

    # ansible-builder drops what ansible-core brings (PyYAML, jinja2 stays listed by collections).
    python = requirement_lines("ee-requirements.txt")
    assert requirements("python") == [r for r in python if r != "PyYAML"]
    assert "globus-sdk>=4.4.1,<5" in requirements("python")
    assert requirements("system") == requirement_lines("ee-bindep.txt")


def test_ee_definition_builds_from_the_local_tarball(tarball, tmp_path):
    recipe = tmp_path / "execution-environment"
    shutil.copytree(os.path.join(COLLECTION_ROOT, "docs", "execution-environment"), recipe)
    shutil.copy(tarball, recipe / "scidata-replication.tar.gz")
    context = tmp_path / "context"
    subprocess.run([os.path.join(BIN, "ansible-builder"), "create", "-f", str(recipe / "execution-environment.yml"),
                    "--context", str(context), "--output-filename", "Containerfile"],
                   check=True, capture_output=True, text=True)
    assert filecmp.cmp(context / "_build" / "collections" / "scidata-replication.tar.gz", tarball, shallow=False)
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    ours = [c for c in galaxy["collections"] if "scidata" in c["name"]]
    assert ours == [{"name": "/build/collections/scidata-replication.tar.gz", "type": "file"}]
    containerfile = (context / "Containerfile").read_text()
    assert "COPY _build /build" in containerfile and "ansible-galaxy collection install" in containerfile
    assert "introspect" in containerfile  # the modules' requirements come from the installed collection


def test_globus_sdk_requirement_is_the_same_everywhere():
    """meta/ee-requirements.txt holds the bound; the missing-library error, the module documentation, the
    guides give the same one; the transfer_host role pins a version within it."""
    (bound,) = [r for r in requirement_lines("ee-requirements.txt") if r.startswith("globus-sdk")]
    assert bound == "globus-sdk>=4.4.1,<5"
    paths = ["plugins/module_utils/_globus.py", "README.md", "docs/docsite/rst/guide_awx.rst"]
    paths += glob.glob("plugins/*/*.py", root_dir=COLLECTION_ROOT)
    found = {}
    for path in paths:
        with open(os.path.join(COLLECTION_ROOT, path)) as handle:
            for spec in re.findall(r"globus-sdk ?>= ?[\d.]+(?:, ?< ?[\d.]+)?", handle.read()):
                found.setdefault(spec.replace(" ", ""), set()).add(path)
    assert set(found) == {bound}, found
    assert {"plugins/module_utils/_globus.py", "plugins/doc_fragments/_globus.py"} <= found[bound]
    # The transfer_host role installs the tested version (pinned, see test_roles_upgrade.py): it lies within the bound.
    with open(os.path.join(COLLECTION_ROOT, "roles/transfer_host/defaults/main.yml")) as handle:
        (pinned,) = re.findall(r"globus-sdk==(\d+)\.(\d+)\.(\d+)", handle.read())
    assert (4, 4, 1) <= tuple(int(part) for part in pinned) < (5,)
