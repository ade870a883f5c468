# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The managed known_hosts file is managed exclusively: a host key withdrawn from the inventory (of
transfer_host or of epn_sync) is no longer trusted after the next run, and a rerun changes nothing."""

from __future__ import annotations

import re

from roles_support import LeanHosts

OLD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOldOldOldOldOldOldOldOldOldOldOldOldOldOldOld0"
NEW_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINewNewNewNewNewNewNewNewNewNewNewNewNewNewNew0"
RSA_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCwithdrawnrsakeywithdrawnrsakeywithdrawnrsake0"
PLAY = [{"hosts": "all", "gather_facts": False,
         "roles": [{"role": "scidata.replication.transfer_host"}, {"role": "scidata.replication.epn_sync"}]}]


def epn_vars(hosts, keys, mirror_keys):
    return {
        "transfer_host_known_hosts": [{"name": "mirror.example.org", "key": "mirror.example.org " + k} for k in mirror_keys],
        "epn_sync_host": "sftp.example.org", "epn_sync_user": "help", "epn_sync_host_keys": keys,
        "epn_sync_epn_cap_map": {"1": "p"}, "epn_sync_dest_root": hosts.path("h", "epn"), "epn_sync_source": "list",
        "epn_sync_epns": ["1"], "epn_sync_alert_enabled": False,
    }


def test_withdrawn_host_keys_are_no_longer_trusted(sshd):
    hosts = LeanHosts(sshd, ["h"])
    try:
        def apply(keys, mirror_keys):
            rc, output = hosts.run(PLAY, "--tags", "transfer_host_configure,epn_sync_configure", name="apply",
                                   host_vars={"h": epn_vars(hosts, keys, mirror_keys)})
            assert rc == 0, output[-4000:]
            with open(hosts.path("h", "etc/known_hosts")) as handle:
                return [line for line in handle.read().splitlines() if not line.startswith("#")], output

        trusted, _output = apply([OLD_KEY, RSA_KEY], [OLD_KEY])
        assert sorted(trusted) == sorted(["sftp.example.org " + OLD_KEY, "sftp.example.org " + RSA_KEY,
                                          "mirror.example.org " + OLD_KEY])
        # The facility rotated its keys and the mirror's key was withdrawn.
        trusted, _output = apply([NEW_KEY], [NEW_KEY])
        assert sorted(trusted) == sorted(["sftp.example.org " + NEW_KEY, "mirror.example.org " + NEW_KEY])
        trusted, output = apply([NEW_KEY], [NEW_KEY])
        assert re.search(r"h\s+: ok=\d+\s+changed=0 ", output), output[-3000:]
    finally:
        hosts.cleanup()
