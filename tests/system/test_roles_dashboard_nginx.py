# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The dashboard role serves its site through the host's own nginx where systemd is not the service
manager (this machine, containers): nginx is started after deployment and reloaded when the site changes."""

from __future__ import annotations

import os
import subprocess

import pytest

from roles_support import LeanHosts
from test_roles_dashboard_access import PLAY, fetch, free_port

SITES_AVAILABLE = "/etc/nginx/sites-available"
SITES_ENABLED = "/etc/nginx/sites-enabled"


def nginx_running():
    return subprocess.run(["service", "nginx", "status"], capture_output=True, check=False).returncode == 0


@pytest.fixture
def system_site(sshd):
    if os.path.isdir("/run/systemd/system"):
        pytest.fail("this test needs a host where systemd is not the service manager")
    was_running = nginx_running()
    hosts = LeanHosts(sshd, ["web"])
    os.makedirs(hosts.path("web", "www/site"))
    with open(hosts.path("web", "www/site/index.html"), "w") as handle:
        handle.write("<html>dashboard of the nginx test</html>")
    site_name = "scidata-replication-test-%s" % os.urandom(4).hex()
    yield hosts, site_name
    for directory in (SITES_ENABLED, SITES_AVAILABLE):
        path = os.path.join(directory, site_name)
        if os.path.lexists(path):
            os.unlink(path)
    subprocess.run(["service", "nginx", "reload" if was_running else "stop"], capture_output=True, check=False)
    hosts.cleanup()


def deploy(hosts, site_name, port):
    host_vars = {"web": {"dashboard_nginx_site_name": site_name, "dashboard_listen_port": port,
                         "dashboard_www_dir": hosts.path("web", "www"),
                         "dashboard_nginx_access_log": hosts.path("web", "access.log")}}
    rc, output = hosts.run(PLAY, "--tags", "dashboard_configure", host_vars=host_vars, name="dashboard")
    assert rc == 0, output[-4000:]


def test_nginx_serves_the_site_after_deployment_and_reloads_on_change(system_site):
    hosts, site_name = system_site
    port = free_port()
    deploy(hosts, site_name, port)
    status, body = fetch("http://127.0.0.1:%d/" % port)
    assert status == 200 and "dashboard of the nginx test" in body
    new_port = free_port()
    deploy(hosts, site_name, new_port)
    with open(os.path.join(SITES_AVAILABLE, site_name)) as handle:
        assert "listen 127.0.0.1:%d;" % new_port in handle.read()
    status, body = fetch("http://127.0.0.1:%d/" % new_port)
    assert status == 200 and "dashboard of the nginx test" in body
