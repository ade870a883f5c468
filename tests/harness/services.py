# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real services for the tests, started on loopback in a temporary directory.

The same classes serve the pytest fixtures (tests/conftest.py) and the command line that
``make test`` uses around ``ansible-test integration``:

    python tests/harness/services.py start --workdir DIR --config-out FILE
    python tests/harness/services.py stop --workdir DIR

Each service writes what a client needs (ports, URLs, key files) into ``info``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STARTUP_TIMEOUT = 30


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, timeout=STARTUP_TIMEOUT, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError("service exited with %s before listening on %d" % (process.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listens on port %d after %ds" % (port, timeout))


def stop_pid(pid, timeout=15):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Service(object):
    """A process started in ``workdir``; its pid is kept in a file so another process can stop it."""

    name = "service"

    def __init__(self, workdir):
        self.workdir = os.path.join(workdir, self.name)
        self.info = {}
        self.process = None

    @property
    def pid_file(self):
        return os.path.join(self.workdir, "harness.pid")

    def _spawn(self, argv, **kwargs):
        log = open(os.path.join(self.workdir, "service.log"), "ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        log.close()
        with open(self.pid_file, "w") as handle:
            handle.write(str(self.process.pid))

    def stop(self):
        if self.process is not None:
            # Our own child: terminate and reap it (a zombie would look alive to stop_pid).
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        elif os.path.exists(self.pid_file):
            with open(self.pid_file) as handle:
                stop_pid(int(handle.read()))
        if os.path.exists(self.pid_file):
            os.unlink(self.pid_file)


class PostgresServer(Service):
    """A throwaway PostgreSQL cluster: TCP on loopback plus a Unix socket in the work dir.

    Roles: ``postgres`` (superuser, trust) and ``replication`` (password ``replication-secret``,
    scram over TCP) for tests of password handling.
    """

    name = "postgresql"
    PASSWORD_ROLE = "replication"
    PASSWORD = "replication-secret"

    @staticmethod
    def bindir():
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        if candidates:
            return os.path.dirname(candidates[-1])
        found = shutil.which("initdb")
        if not found:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        return os.path.dirname(found)

    def _as_owner(self, argv):
        # initdb refuses to run as root: run the server as the postgres account when we are root.
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--"] + argv
        return argv

    def start(self, fsync=False):
        os.makedirs(self.workdir, mode=0o700)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
        bindir = self.bindir()
        data = os.path.join(self.workdir, "data")
        subprocess.run(
            self._as_owner([os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
                            "-E", "UTF8", "--no-sync"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        with open(os.path.join(data, "pg_hba.conf"), "w") as handle:
            handle.write(
                "local all all trust\n"
                "host all %s 127.0.0.1/32 scram-sha-256\n"
                "host all all 127.0.0.1/32 trust\n" % self.PASSWORD_ROLE
            )
        port = free_port()
        options = "-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s -c max_connections=100" % (
            port, self.workdir)
        if not fsync:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(
            self._as_owner([os.path.join(bindir, "pg_ctl"), "-D", data, "-o", options, "-l",
                            os.path.join(self.workdir, "server.log"), "-w", "-t", str(STARTUP_TIMEOUT), "start"]),
            check=True, stdout=subprocess.DEVNULL,
        )
        pid = open(os.path.join(data, "postmaster.pid")).readline().strip()
        with open(self.pid_file, "w") as handle:
            handle.write(pid)
        self.info = dict(
            port=port,
            socket_dir=self.workdir,
            bindir=bindir,
            admin_url="postgresql://postgres@127.0.0.1:%d/postgres" % port,
            password_role=self.PASSWORD_ROLE,
            password=self.PASSWORD,
        )
        self.psql("CREATE ROLE %s LOGIN PASSWORD '%s' CREATEDB" % (self.PASSWORD_ROLE, self.PASSWORD))
        return self

    def psql(self, sql, database="postgres"):
        """Run SQL through the real psql client; returns its output (unaligned, tuples only)."""
        result = subprocess.run(
            [os.path.join(self.info["bindir"], "psql") if os.path.exists(os.path.join(self.info["bindir"], "psql"))
             else "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.info["port"]), "-U", "postgres", "-d", database, "-c", sql],
            check=True, capture_output=True, text=True,
        )
        return result.stdout

    def create_database(self, name, owner="postgres"):
        self.psql('CREATE DATABASE "%s" OWNER "%s"' % (name, owner))
        return "postgresql://%s@127.0.0.1:%d/%s" % (owner, self.info["port"], name)

    def stop(self):
        data = os.path.join(self.workdir, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run(self._as_owner([os.path.join(self.bindir(), "pg_ctl"), "-D", data, "-m", "fast", "-w",
                                           "stop"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if os.path.exists(self.pid_file):
            os.unlink(self.pid_file)


class SshServer(Service):
    """OpenSSH sshd with its own host key and one authorized client key, for rsync and SFTP."""

    name = "sshd"

    def start(self):
        os.makedirs(self.workdir, mode=0o700)
        host_key = os.path.join(self.workdir, "ssh_host_ed25519_key")
        client_key = os.path.join(self.workdir, "id_ed25519")
        for path in (host_key, client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
        shutil.copy(client_key + ".pub", os.path.join(self.workdir, "authorized_keys"))
        port = free_port()
        config = os.path.join(self.workdir, "sshd_config")
        with open(config, "w") as handle:
            handle.write("\n".join([
                "Port %d" % port,
                "ListenAddress 127.0.0.1",
                "HostKey %s" % host_key,
                "PidFile %s" % os.path.join(self.workdir, "sshd.pid"),
                "AuthorizedKeysFile %s" % os.path.join(self.workdir, "authorized_keys"),
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                # The work dir lives under /tmp, which StrictModes rejects as world-writable.
                "StrictModes no",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                "",
            ]))
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self._spawn([sshd, "-D", "-e", "-f", config])
        wait_for_port(port, process=self.process)
        host_pub = open(host_key + ".pub").read().split()
        known_hosts = os.path.join(self.workdir, "known_hosts")
        with open(known_hosts, "w") as handle:
            handle.write("[127.0.0.1]:%d %s %s\n" % (port, host_pub[0], host_pub[1]))
        self.info = dict(
            host="127.0.0.1",
            port=port,
            user=pwd.getpwuid(os.geteuid()).pw_name,
            key_file=client_key,
            known_hosts=known_hosts,
            host_public_key="%s %s" % (host_pub[0], host_pub[1]),
        )
        return self


class SmtpSink(Service):
    """An aiosmtpd server that stores every accepted message as ``<n>.eml`` in ``info['maildir']``."""

    name = "smtp"

    def start(self):
        os.makedirs(self.workdir, mode=0o700)
        maildir = os.path.join(self.workdir, "messages")
        port = free_port()
        self._spawn([sys.executable, os.path.join(HERE, "smtp_sink.py"), "--port", str(port), "--maildir", maildir])
        wait_for_port(port, process=self.process)
        self.info = dict(host="127.0.0.1", port=port, maildir=maildir)
        return self

    def messages(self):
        """The captured messages, oldest first, as ``email.message.Message`` objects."""
        import email
        from email import policy

        maildir = self.info["maildir"]
        names = sorted(os.listdir(maildir), key=lambda n: int(n.split(".")[0])) if os.path.isdir(maildir) else []
        return [email.message_from_bytes(open(os.path.join(maildir, n), "rb").read(), policy=policy.default)
                for n in names]


SERVICES = dict((cls.name, cls) for cls in (PostgresServer, SshServer, SmtpSink))


def start_all(workdir, names):
    started = {}
    try:
        for name in names:
            started[name] = SERVICES[name](workdir).start()
    except Exception:
        for service in started.values():
            service.stop()
        raise
    return started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config-out", help="integration_config.yml to write (JSON is valid YAML)")
    parser.add_argument("--services", default=",".join(SERVICES))
    args = parser.parse_args()
    names = [n for n in args.services.split(",") if n]
    if args.action == "stop":
        for name in names:
            SERVICES[name](args.workdir).stop()
        return
    os.makedirs(args.workdir, exist_ok=True)
    started = start_all(args.workdir, names)
    config = dict(("%s_%s" % (name, key), value) for name, svc in started.items() for key, value in svc.info.items())
    config["harness_workdir"] = os.path.abspath(args.workdir)
    if args.config_out:
        with open(args.config_out, "w") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
    json.dump(config, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
