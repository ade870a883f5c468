# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Lean role runs for the tests/system/test_roles_*.py files: a few inventory hosts, each an alias of the
harness's sshd on loopback with its own prefix, so one ansible-playbook run can try several inputs side by
side over real SSH without installing the virtual environment of a full deployment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION_ROOT = os.path.dirname(TESTS_DIR)
COLLECTIONS_PATH = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_ROOT)))
BIN = os.path.dirname(sys.executable)
# Where each host alias keeps what transfer_host renders, relative to its prefix.
LAYOUT = ("etc/jobs", "etc/secrets", "var/lib/locks", "var/log", "opt/bin", "systemd", "cron.d", "logrotate.d")


def ssh_vars(sshd):
    """The connection variables of a host reached through the harness's sshd, host keys checked."""
    info = sshd.info
    return {
        "ansible_host": info["host"],
        "ansible_port": info["port"],
        "ansible_user": info["user"],
        "ansible_ssh_private_key_file": info["key_file"],
        "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % info["known_hosts"],
        "ansible_python_interpreter": sys.executable,
    }


class LeanHosts(object):
    """Host aliases of the sshd, each with transfer_host's paths under a prefix of its own (service user root)."""

    def __init__(self, sshd, names, layout=True):
        self.root = tempfile.mkdtemp(prefix="scidata-lean-")
        os.chmod(self.root, 0o755)
        self.sshd = sshd
        self.hosts = {}
        for name in names:
            prefix = os.path.join(self.root, name)
            for sub in (LAYOUT if layout else ()):
                os.makedirs(os.path.join(prefix, sub))
            self.hosts[name] = dict(ssh_vars(sshd), **self.transfer_host_vars(prefix))

    @staticmethod
    def transfer_host_vars(prefix):
        return {
            "transfer_host_user": "root",
            "transfer_host_group": "root",
            "transfer_host_config_dir": prefix + "/etc",
            "transfer_host_state_dir": prefix + "/var/lib",
            "transfer_host_log_dir": prefix + "/var/log",
            "transfer_host_install_dir": prefix + "/opt",
            "transfer_host_systemd_unit_dir": prefix + "/systemd",
            "transfer_host_cron_dir": prefix + "/cron.d",
            "transfer_host_logrotate_dir": prefix + "/logrotate.d",
            "transfer_host_install_collection": False,
        }

    def path(self, host, *parts):
        return os.path.join(self.root, host, *parts)

    def files(self, host):
        """Every file under the host's prefix, relative to it."""
        found = []
        for dirpath, _dirnames, filenames in os.walk(self.path(host)):
            found.extend(os.path.relpath(os.path.join(dirpath, f), self.path(host)) for f in filenames)
        return sorted(found)

    def run(self, play, *args, extra_env=None, host_vars=None, groups=None, name="play"):
        """Run ``play`` (a list of plays, or the path of a playbook) against the aliases, with ``groups``
        ({group: [host, ...]}) in the inventory; returns (rc, stdout + stderr)."""
        inventory = {"all": {"hosts": {h: dict(v, **(host_vars or {}).get(h, {})) for h, v in self.hosts.items()},
                             "children": {g: {"hosts": {h: {} for h in members}} for g, members in (groups or {}).items()}}}
        inventory_path = os.path.join(self.root, name + "-inventory.json")
        play_path = os.path.join(self.root, name + ".yml")
        with open(inventory_path, "w") as handle:
            json.dump(inventory, handle)
        if isinstance(play, str):
            play_path = play
        else:
            with open(play_path, "w") as handle:
                json.dump(play, handle)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                   ANSIBLE_PIPELINING="1")
        env.pop("ANSIBLE_HOST_KEY_CHECKING", None)
        env.update(extra_env or {})
        result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory_path, play_path] + list(args),
                                env=env, capture_output=True, text=True, timeout=600, check=False)
        return result.returncode, result.stdout + result.stderr

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)
