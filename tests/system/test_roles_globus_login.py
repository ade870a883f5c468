# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/globus_login.yml on a transfer host over SSH: the module runs as the service account, whose
home holds the token file the jobs read, and the authorization code never shows in the output."""

from __future__ import annotations

import json
import os
import pty
import pwd
import re
import stat
import subprocess
import time
import uuid

import pytest

from globus_setup import NATIVE
from roles_support import BIN, COLLECTION_ROOT, COLLECTIONS_PATH, LeanHosts

PLAYBOOK = os.path.join(COLLECTION_ROOT, "playbooks", "globus_login.yml")


def globus_sdk_pin():
    with open(os.path.join(COLLECTION_ROOT, "roles", "transfer_host", "defaults", "main.yml")) as handle:
        return re.search(r"^\s+- (globus-sdk==\S+)$", handle.read(), re.MULTILINE).group(1)


@pytest.fixture
def service_host(sshd):
    """A host alias of the sshd with a service account (nologin shell, home of its own) and a Python the
    account can run, with the Globus SDK the jobs' virtual environment gets."""
    hosts = LeanHosts(sshd, ["xfer"], layout=False)
    user = "scidata-login-" + uuid.uuid4().hex[:6]
    home = hosts.path("xfer", "home")
    venv = hosts.path("xfer", "venv")
    subprocess.run(["useradd", "--system", "--home-dir", home, "--create-home", "--shell", "/usr/sbin/nologin",
                    user], check=True, capture_output=True)
    try:
        subprocess.run(["/usr/bin/python3", "-m", "venv", venv], check=True, capture_output=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", globus_sdk_pin()], check=True,
                       capture_output=True, env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
        hosts.hosts["xfer"].update({
            "ansible_python_interpreter": os.path.join(venv, "bin", "python"),
            "transfer_host_user": user,
            # No sudo on this machine: root becomes the account with su, past its nologin shell.
            "ansible_become_method": "su",
            "ansible_become_flags": "-s /bin/sh",
        })
        yield hosts, user, home
    finally:
        subprocess.run(["userdel", user], capture_output=True, check=False)
        hosts.cleanup()


def login(hosts, emulator, tmp_path, *args, **extra):
    variables = dict({"scidata_login_hosts": "xfer", "globus_client_id": NATIVE,
                      "globus_login_environment": emulator.env}, **extra)
    with open(tmp_path / "login-vars.json", "w") as handle:
        json.dump(variables, handle)
    return hosts.run(PLAYBOOK, "-vvv", "-e", "@%s" % (tmp_path / "login-vars.json"), *args, name="login")


def test_login_on_a_transfer_host_as_the_service_account_without_echo(service_host, emulator, tmp_path):
    hosts, user, home = service_host
    token_file = os.path.join(home, ".globus", "scidata-replication", "tokens.json")
    rc, output = login(hosts, emulator, tmp_path)  # no terminal, no code: the URL to log in at, nothing stored
    assert rc != 0 and "No authorization code" in output, output[-4000:]
    assert not os.path.exists(token_file)
    url = re.search(r"log in to Globus at (\S+)", output).group(1)
    assert url.startswith(emulator.base_url)
    code = emulator.follow_authorize_url(url)
    rc, output = login(hosts, emulator, tmp_path, "--check", globus_auth_code=code)
    assert rc == 0 and "changed=1" in output and code not in output, output[-4000:]
    assert not os.path.exists(token_file)
    rc, output = login(hosts, emulator, tmp_path, globus_auth_code=code)
    assert rc == 0, output[-4000:]
    assert code not in output
    info = os.stat(token_file)
    assert pwd.getpwuid(info.st_uid).pw_name == user and stat.S_IMODE(info.st_mode) == 0o600
    with open(token_file) as handle:
        assert "refresh_token" in handle.read()
    rc, output = login(hosts, emulator, tmp_path)  # logged in: nothing asked, nothing changed
    assert rc == 0 and "changed=0" in output, output[-4000:]


def login_at_a_terminal(hosts, emulator, tmp_path):
    """The playbook at a terminal, answered like a person: the code typed at the prompt; returns
    (rc, everything the terminal showed, code)."""
    rc, output = login(hosts, emulator, tmp_path, "--list-hosts")  # writes the inventory and the variables
    assert rc == 0, output[-4000:]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="1")
    env.pop("ANSIBLE_HOST_KEY_CHECKING", None)
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", os.path.join(hosts.root, "login-inventory.json"),
            "-e", "@%s" % (tmp_path / "login-vars.json"), PLAYBOOK]
    pid, terminal = pty.fork()
    if pid == 0:
        os.execve(argv[0], argv, env)
    shown, code = b"", None
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the playbook ended and closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        if code is None and b"paste the authorization code" in shown:
            code = emulator.follow_authorize_url(re.search(rb"(http\S+/authorize\S*)", shown).group(1).decode())
            time.sleep(1)  # let the prompt switch the terminal's echo off before typing
            os.write(terminal, code.encode() + b"\r")
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace"), code


def test_code_typed_at_the_prompt_is_not_echoed(service_host, emulator, tmp_path):
    hosts, user, home = service_host
    rc, shown, code = login_at_a_terminal(hosts, emulator, tmp_path)
    assert code and rc == 0, shown[-4000:]
    assert code not in shown
    token_file = os.path.join(home, ".globus", "scidata-replication", "tokens.json")
    assert pwd.getpwuid(os.stat(token_file).st_uid).pw_name == user
