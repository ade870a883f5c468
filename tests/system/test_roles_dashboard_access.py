# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The dashboard's nginx site: loopback by default, TLS and basic authentication when asked (served by the
real nginx), and no site left behind once nginx no longer serves the dashboard."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from roles_support import LeanHosts

PLAY = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "scidata.replication.dashboard"}]}]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def site(sshd, tmp_path):
    hosts = LeanHosts(sshd, ["web"])
    for sub in ("nginx/available", "nginx/enabled", "www/site"):
        os.makedirs(hosts.path("web", sub))
    with open(hosts.path("web", "www/site/index.html"), "w") as handle:
        handle.write("<html>dashboard</html>")
    yield hosts
    hosts.cleanup()


def dashboard_vars(hosts, **extra):
    return {"web": dict({"dashboard_nginx_sites_available_dir": hosts.path("web", "nginx/available"),
                         "dashboard_nginx_sites_enabled_dir": hosts.path("web", "nginx/enabled"),
                         "dashboard_www_dir": hosts.path("web", "www"),
                         "dashboard_nginx_access_log": hosts.path("web", "access.log")}, **extra)}


def configure(hosts, host_vars):
    rc, output = hosts.run(PLAY, "--tags", "dashboard_configure", host_vars=host_vars, name="dashboard")
    assert rc == 0, output[-4000:]
    return output


def serve(hosts, workdir):
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as handle:
        handle.write("user www-data;\npid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp {\n  include /etc/nginx/mime.types;\n"
                     "  include %s;\n}\n" % (workdir, workdir, hosts.path("web", "nginx/available/scidata-replication")))
    return subprocess.Popen(["nginx", "-p", workdir, "-c", conf, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def fetch(url, auth=None, context=None):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_loopback_by_default_and_no_site_left_when_nginx_is_off(site):
    configure(site, dashboard_vars(site))
    with open(site.path("web", "nginx/available/scidata-replication")) as handle:
        assert "    listen 127.0.0.1:8080;\n" in handle.read()
    assert os.path.islink(site.path("web", "nginx/enabled/scidata-replication"))
    configure(site, dashboard_vars(site, dashboard_nginx_enabled=False))
    assert os.listdir(site.path("web", "nginx/available")) == [] and os.listdir(site.path("web", "nginx/enabled")) == []


def test_tls_and_basic_authentication(site, tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    port = free_port()
    password = "dash-" + os.urandom(6).hex()
    host_vars = dashboard_vars(site, dashboard_listen_port=port, dashboard_tls_certificate=cert,
                               dashboard_tls_certificate_key=key,
                               dashboard_basic_auth_users=[{"name": "viewer", "password": password}])
    output = configure(site, host_vars)
    assert password not in output
    with open(site.path("web", "nginx/available/scidata-replication.htpasswd")) as handle:
        users = handle.read()
    assert users.startswith("viewer:$6$") and password not in users
    output = configure(site, host_vars)  # same hashes, nothing changes
    assert "changed=0" in output, output[-3000:]
    workdir = str(tmp_path / "nginx")
    os.makedirs(workdir)
    shutil.copy(cert, workdir)
    nginx = serve(site, workdir)
    context = ssl.create_default_context(cafile=cert)
    try:
        assert fetch("https://127.0.0.1:%d/" % port, context=context)[0] == 401
        assert fetch("https://127.0.0.1:%d/" % port, auth="viewer:wrong", context=context)[0] == 401
        status, body = fetch("https://127.0.0.1:%d/" % port, auth="viewer:" + password, context=context)
        assert status == 200 and "dashboard" in body
    finally:
        nginx.terminate()
        nginx.wait(timeout=15)
