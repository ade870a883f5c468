# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The roles, applied by playbooks/site.yml over real SSH to this machine as a remote host would be.

One deployment per module: state_db against the harness's PostgreSQL, transfer_host, globus_replication
(systemd), dir_sync (cron), epn_sync (systemd) and dashboard (cron), every path under a fresh prefix and
a service user of its own. It is applied to a clean target at -vvv, again (changed=0), then in check mode
(changed=0, nothing changed on disk). The tests then look at the real results, run the rendered job
playbooks as the service user (Globus transfers against the API emulator, the dashboard), and serve the
dashboard with nginx.
"""

from __future__ import annotations

import filecmp
import glob
import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import pytest
import yaml

from ansible_collections.scidata.replication.plugins.module_utils._state import LATEST_VERSION
from globus_setup import CONFIDENTIAL, DST, SECRET, SRC

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION_ROOT = os.path.dirname(TESTS_DIR)
COLLECTIONS_PATH = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_ROOT)))
BIN = os.path.dirname(sys.executable)
ROLES = ("transfer_host", "state_db", "globus_replication", "dir_sync", "epn_sync", "dashboard")
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def recap(output):
    """{host: (ok, changed, unreachable, failed)} from the PLAY RECAP."""
    return {m.group(1): tuple(int(m.group(i)) for i in range(2, 6)) for m in RECAP.finditer(output)}


def snapshot(root, skip=("work",)):
    """Every file, directory and link under root (but skip) with its mode, owner, size, mtime and content hash."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            entry = (stat.filemode(info.st_mode), info.st_uid, info.st_gid, info.st_size, info.st_mtime_ns)
            if stat.S_ISREG(info.st_mode) and info.st_size < 1 << 20:
                with open(path, "rb") as handle:
                    entry += (hashlib.sha256(handle.read()).hexdigest(),)
            elif stat.S_ISLNK(info.st_mode):
                entry += (os.readlink(path),)
            state[os.path.relpath(path, root)] = entry
    return state


def same_tree(left, right):
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.diff_files or comparison.funny_files:
        return False
    _match, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(os.path.join(left, d), os.path.join(right, d))
                                               for d in comparison.common_dirs)


class Deployment(object):
    """The prefix, the inventory and the three runs of playbooks/site.yml."""

    def __init__(self, sshd, postgres, emulator):
        self.id = uuid.uuid4().hex[:8]
        self.prefix = tempfile.mkdtemp(prefix="scidata-roles-")
        os.chmod(self.prefix, 0o755)  # the service user and nginx's workers walk through it
        for sub in ("systemd", "cron.d", "logrotate.d", "nginx/sites-available", "nginx/sites-enabled", "work"):
            os.makedirs(self.path(sub))
        self.user = "scidr" + self.id
        self.db = "scidr_" + self.id
        self.tree = "roles-" + self.id
        self.dashboard_port = free_port()
        self.secrets = {
            "client_secret": SECRET,
            "db_password": "db-" + uuid.uuid4().hex,
            "smtp_password": "smtp-" + uuid.uuid4().hex,
            "portal_client_password": "portal-client-" + uuid.uuid4().hex,
            "portal_password": "portal-user-" + uuid.uuid4().hex,
        }
        with open(sshd.info["key_file"]) as handle:
            self.private_key = handle.read()
        # The body of the private key is a secret too.
        self.secrets["private_key"] = "".join(self.private_key.strip().splitlines()[1:-1])[:60]
        self.sshd = sshd
        self.postgres = postgres
        self.emulator = emulator
        self.tarball = self.build_collection()
        self.inventory = self.path("work", "inventory.yml")
        with open(self.inventory, "w") as handle:
            json.dump(self.inventory_data(), handle, indent=1)
        self.runs = {}

    def path(self, *parts):
        return os.path.join(self.prefix, *parts)

    def build_collection(self):
        out = self.path("work", "dist")
        subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--force", "--output-path",
                        out, COLLECTION_ROOT], check=True, capture_output=True, text=True)
        return glob.glob(os.path.join(out, "scidata-replication-*.tar.gz"))[0]

    def inventory_data(self):
        info = self.sshd.info
        emulator_env = dict(self.emulator.env.items())
        known_host = "[%s]:%d" % (info["host"], info["port"])
        target_vars = {
            "ansible_host": info["host"],
            "ansible_port": info["port"],
            "ansible_user": info["user"],
            "ansible_ssh_private_key_file": info["key_file"],
            # Host keys stay checked: the harness's known_hosts holds the sshd's key.
            "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % info["known_hosts"],
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        p = self.prefix
        group_vars = {
            "transfer_host_user": self.user,
            "transfer_host_group": self.user,
            "transfer_host_config_dir": p + "/etc",
            "transfer_host_state_dir": p + "/var/lib",
            "transfer_host_log_dir": p + "/var/log",
            "transfer_host_install_dir": p + "/opt",
            "transfer_host_systemd_unit_dir": p + "/systemd",
            "transfer_host_cron_dir": p + "/cron.d",
            "transfer_host_logrotate_dir": p + "/logrotate.d",
            "transfer_host_collection_tarball": self.tarball,
            "transfer_host_known_hosts": [{"name": known_host, "key": "%s %s" % (known_host, info["host_public_key"])}],
            "transfer_host_state_db": "postgresql://%s@127.0.0.1:%d/%s" % (self.db, self.postgres.info["port"], self.db),
            "transfer_host_state_db_password": self.secrets["db_password"],
            "transfer_host_smtp_user": "mailer",
            "transfer_host_smtp_password": self.secrets["smtp_password"],
            "state_db_name": self.db,
            "state_db_user": self.db,
            "state_db_password": self.secrets["db_password"],
            "state_db_install_server": False,
            "state_db_login_host": "127.0.0.1",
            "state_db_login_port": self.postgres.info["port"],
            "globus_replication_client_id": CONFIDENTIAL,
            "globus_replication_client_secret": self.secrets["client_secret"],
            "globus_replication_environment": emulator_env,
            "globus_replication_scheduler": "systemd",
            "globus_replication_path_lists": [{"name": "trees", "paths": [self.tree + "/"]}],
            "globus_replication_configs": [{
                "name": "roles",
                "transfer": {
                    "items_per_task": 1,
                    "routes": [{"name": "roles-" + self.id, "source_collection": SRC,
                                "items_from": p + "/etc/paths/trees",
                                "destinations": [{"collection": DST, "prefix": "/roles-replica"}]}],
                },
            }],
            "dir_sync_client_id": CONFIDENTIAL,
            "dir_sync_client_secret": self.secrets["client_secret"],
            "dir_sync_environment": emulator_env,
            "dir_sync_scheduler": "cron",
            "dir_sync_events_enabled": False,
            "dir_sync_jobs": [{"name": "tree", "options": {
                "src_dir": p + "/work/tree", "source_collection": SRC, "source_path": "/" + self.tree,
                "destinations": [{"collection": DST, "path": "/dirsync/" + self.tree}]}}],
            "epn_sync_scheduler": "systemd",
            "epn_sync_host": info["host"],
            "epn_sync_port": info["port"],
            "epn_sync_user": info["user"],
            "epn_sync_private_key": self.private_key,
            "epn_sync_host_keys": [info["host_public_key"]],
            "epn_sync_epn_cap_map": {"1234": "project-a"},
            "epn_sync_dest_root": p + "/epn",
            "epn_sync_portal_url": "http://127.0.0.1:9/",
            "epn_sync_portal_equipment": [{"id": "42", "client_name": "beamline-client", "username": "bob",
                                           "client_password": self.secrets["portal_client_password"],
                                           "password": self.secrets["portal_password"]}],
            "epn_sync_alert_mail_to": ["ops@example.org"],
            "dashboard_scheduler": "cron",
            "dashboard_www_dir": p + "/www",
            "dashboard_listen_address": "127.0.0.1",
            "dashboard_listen_port": self.dashboard_port,
            "dashboard_nginx_sites_available_dir": p + "/nginx/sites-available",
            "dashboard_nginx_sites_enabled_dir": p + "/nginx/sites-enabled",
            "dashboard_nginx_access_log": p + "/nginx/access.log",
        }
        groups = ["scidata_state_db", "scidata_transfer_hosts", "scidata_globus_replication", "scidata_dir_sync",
                  "scidata_epn_sync", "scidata_dashboard"]
        data = {"all": {"hosts": {"target": target_vars}, "vars": group_vars,
                        "children": {g: {"hosts": {"target": {}}} for g in groups}}}
        return data

    def playbook(self, *args, name):
        argv = [os.path.join(BIN, "ansible-playbook"), "-i", self.inventory,
                os.path.join(COLLECTION_ROOT, "playbooks", "site.yml")] + list(args)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="1",
                   ANSIBLE_FORCE_COLOR="0")
        env.pop("ANSIBLE_HOST_KEY_CHECKING", None)
        started = time.monotonic()
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
        output = result.stdout + result.stderr
        with open(self.path("work", name + ".log"), "w") as handle:
            handle.write(output)
        self.runs[name] = dict(rc=result.returncode, output=output, recap=recap(result.stdout),
                               seconds=time.monotonic() - started)
        return self.runs[name]

    def run_job(self, job, timeout=300):
        """Run a rendered job the way cron does, through the runner (it switches to the service user)."""
        result = subprocess.run([self.path("opt", "bin", "scidata-replication-run"), job], capture_output=True,
                                text=True, timeout=timeout, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                check=False)
        return result.returncode, result.stdout + result.stderr

    def rendered_files(self):
        """Every job playbook, unit, cron file, the runner and the nginx site: where no secret may be."""
        patterns = ["etc/jobs/*", "systemd/*", "cron.d/*", "opt/bin/*", "nginx/sites-available/*",
                    "logrotate.d/*", "etc/paths/*"]
        return [f for pattern in patterns for f in glob.glob(self.path(pattern))]

    def cleanup(self):
        subprocess.run(["userdel", self.user], capture_output=True, check=False)
        subprocess.run(["groupdel", self.user], capture_output=True, check=False)
        try:
            self.postgres.psql('DROP DATABASE IF EXISTS "%s"' % self.db)
            self.postgres.psql('DROP ROLE IF EXISTS "%s"' % self.db)
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.prefix, ignore_errors=True)


@pytest.fixture(scope="module")
def deployment(sshd, postgres, emulator):
    deployed = Deployment(sshd, postgres, emulator)
    try:
        first = deployed.playbook("-vvv", name="apply")
        assert first["rc"] == 0, first["output"][-6000:]
        deployed.playbook(name="again")
        deployed.before_check = snapshot(deployed.prefix)
        deployed.playbook("--check", name="check")
        deployed.after_check = snapshot(deployed.prefix)
        yield deployed
    finally:
        if not os.environ.get("SCIDATA_KEEP_ROLES_PREFIX"):  # set it to look at the files after a failure
            deployed.cleanup()


def test_first_run_changes_then_second_run_changes_nothing(deployment):
    first, again = deployment.runs["apply"], deployment.runs["again"]
    print("seconds per run:", {name: round(run["seconds"]) for name, run in deployment.runs.items()})
    assert first["recap"]["target"][1] > 0
    assert again["rc"] == 0, again["output"][-6000:]
    assert again["recap"]["target"][1:] == (0, 0, 0), [
        line for line in again["output"].splitlines() if line.startswith("changed:")]


def test_check_mode_changes_nothing(deployment):
    check = deployment.runs["check"]
    assert check["rc"] == 0, check["output"][-6000:]
    assert check["recap"]["target"][1:] == (0, 0, 0), [
        line for line in check["output"].splitlines() if line.startswith("changed:")]
    changed = {path: (deployment.before_check.get(path), deployment.after_check.get(path))
               for path in set(deployment.before_check) | set(deployment.after_check)
               if deployment.before_check.get(path) != deployment.after_check.get(path)}
    assert changed == {}


def mode_owner(path):
    info = os.stat(path)
    return "%04o" % stat.S_IMODE(info.st_mode), pwd.getpwuid(info.st_uid).pw_name, info.st_gid


def test_transfer_host_layout(deployment):
    user = pwd.getpwnam(deployment.user)
    group = user.pw_gid
    assert user.pw_dir == deployment.path("var/lib") and user.pw_shell == "/usr/sbin/nologin"
    expected = {
        "etc": ("0750", "root", group),
        "etc/jobs": ("0750", "root", group),
        "etc/secrets": ("0700", deployment.user, group),
        "var/lib": ("0750", deployment.user, group),
        "var/log": ("0750", deployment.user, group),
        "opt/bin/scidata-replication-run": ("0755", "root", 0),
        "etc/known_hosts": ("0644", "root", group),
        "logrotate.d/scidata-replication": ("0644", "root", 0),
        "www": ("0755", deployment.user, group),
        "epn": ("0750", deployment.user, group),
    }
    assert {p: mode_owner(deployment.path(p)) for p in expected} == expected
    for job in glob.glob(deployment.path("etc/jobs/*.yml")):
        assert mode_owner(job) == ("0640", "root", group)
    # The Python side of the modules and this collection, installed from the tarball.
    python = deployment.path("opt/venv/bin/python")
    subprocess.run([python, "-c", "import globus_sdk, psycopg2, paramiko, jinja2, matplotlib, ansible"], check=True)
    with open(deployment.path("opt/collections/ansible_collections/scidata/replication/MANIFEST.json")) as handle:
        manifest = json.load(handle)["collection_info"]
    with open(os.path.join(COLLECTION_ROOT, "galaxy.yml")) as handle:
        assert manifest["version"] == yaml.safe_load(handle)["version"]
    with open(deployment.path("etc/known_hosts")) as handle:
        known_hosts = handle.read()
    assert deployment.sshd.info["host_public_key"] in known_hosts
    subprocess.run(["logrotate", "--debug", "--state", "/dev/null", deployment.path("logrotate.d/scidata-replication")],
                   check=True, capture_output=True)


def test_secrets_only_in_0600_environment_files(deployment):
    secrets = deployment.secrets
    env_files = glob.glob(deployment.path("etc/secrets/*"))
    assert sorted(os.path.basename(f) for f in env_files) == sorted([
        "dashboard.env", "dirsync-tree.env", "epn-alert.env", "epn-rsync.env", "epn.key",
        "globus-roles-events.env", "globus-roles-transfers.env"])
    for path in env_files:
        assert mode_owner(path)[:2] == ("0600", deployment.user), path
    contents = {}
    for path in env_files:
        with open(path) as handle:
            contents[os.path.basename(path)] = handle.read()
    assert 'GLOBUS_CLIENT_SECRET="%s"' % secrets["client_secret"] in contents["globus-roles-transfers.env"]
    assert 'SCIDATA_STATE_DB_PASSWORD="%s"' % secrets["db_password"] in contents["dashboard.env"]
    assert 'SCIDATA_PORTAL_PASSWORD_0="%s"' % secrets["portal_password"] in contents["epn-rsync.env"]
    assert 'SCIDATA_SMTP_PASSWORD="%s"' % secrets["smtp_password"] in contents["epn-alert.env"]
    assert secrets["private_key"] in contents["epn.key"]
    # Nowhere else: not in a job playbook, unit, cron line, the runner, nor in any output at -vvv.
    rendered = deployment.rendered_files()
    assert len(rendered) > 15
    for path in rendered:
        with open(path, errors="replace") as handle:
            text = handle.read()
        for name, value in secrets.items():
            assert value not in text, (name, path)
    for run in deployment.runs.values():
        for name, value in secrets.items():
            assert value not in run["output"], name
    assert "ESTABLISH SSH CONNECTION" in deployment.runs["apply"]["output"]  # -vvv, over SSH


def test_state_db_on_the_harness_postgresql(deployment, postgres):
    db = deployment.db
    assert postgres.psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '%s'" % db).strip() == db
    assert postgres.psql("SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = '%s'" % db).strip() == "t|f"
    assert postgres.psql("SELECT has_database_privilege('replication', '%s', 'CONNECT')" % db).strip() == "f"
    assert int(postgres.psql("SELECT max(version) FROM schema_version", database=db)) == LATEST_VERSION


def test_systemd_units_verify_and_are_hardened(deployment):
    units = sorted(glob.glob(deployment.path("systemd/*")))
    assert [os.path.basename(u) for u in units] == [
        "scidata-replication-epn-alert.service", "scidata-replication-epn-alert.timer",
        "scidata-replication-epn-rsync.service", "scidata-replication-epn-rsync.timer",
        "scidata-replication-globus-roles-events.service", "scidata-replication-globus-roles-events.timer",
        "scidata-replication-globus-roles-transfers.service", "scidata-replication-globus-roles-transfers.timer"]
    for unit in units:
        assert mode_owner(unit) == ("0644", "root", 0)
    result = subprocess.run(["systemd-analyze", "verify"] + units, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    with open(deployment.path("systemd/scidata-replication-globus-roles-transfers.timer")) as handle:
        timer = handle.read()
    assert "OnCalendar=*-*-* *:05,35:00\n" in timer and "Persistent=true\n" in timer
    assert "RandomizedDelaySec=60\n" in timer and "AccuracySec=1us\n" in timer
    for spec in ("*-*-* *:05,35:00", "*-*-* *:05/10:00", "hourly", "*-*-* 01:00:00"):
        subprocess.run(["systemd-analyze", "calendar", spec], check=True, capture_output=True)
    with open(deployment.path("systemd/scidata-replication-globus-roles-transfers.service")) as handle:
        service = handle.read()
    for line in ("Type=oneshot", "User=" + deployment.user, "TimeoutStartSec=1800", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "EnvironmentFile=%s/etc/secrets/globus-roles-transfers.env" % deployment.prefix):
        assert line + "\n" in service
    for line in service.splitlines():
        if line.startswith("Environment="):
            assert "SECRET" not in line and "PASSWORD" not in line, line
    for unit in units:
        if not unit.endswith(".service"):
            continue
        result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", unit],
                                capture_output=True, text=True, check=False)
        exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
        assert exposure, result.stdout + result.stderr
        assert float(exposure.group(1)) <= 3.0, result.stdout


def test_cron_files(deployment):
    runner = deployment.path("opt/bin/scidata-replication-run")
    log = deployment.path("var/log")
    expected = {
        "scidata-replication-dashboard": "*/10 * * * * %s %s dashboard >>%s/dashboard.cron.log 2>&1",
        "scidata-replication-dirsync-tree": "*/15 * * * * %s %s dirsync-tree >>%s/dirsync-tree.cron.log 2>&1",
    }
    assert sorted(os.listdir(deployment.path("cron.d"))) == sorted(expected)
    for name, line in expected.items():
        path = deployment.path("cron.d", name)
        assert mode_owner(path)[:2] == ("0644", "root")
        with open(path) as handle:
            text = handle.read()
        assert "#Ansible: %s\n" % name in text
        assert (line % (deployment.user, runner, log)) + "\n" in text


def test_rendered_globus_job_replicates_a_tree(deployment, emulator):
    emulator.reset()
    source = os.path.join(str(emulator.root), "src", deployment.tree)
    for number in range(3):
        os.makedirs(os.path.join(source, "d%d" % number, "deeper"))
        with open(os.path.join(source, "d%d" % number, "file %d.nc" % number), "wb") as handle:
            handle.write(os.urandom(3000 + number))
        with open(os.path.join(source, "d%d" % number, "deeper", "data.nc"), "wb") as handle:
            handle.write(os.urandom(1000))
    replica = os.path.join(str(emulator.root), "dst", "roles-replica", deployment.tree)
    outputs = []
    for _round in range(4):
        rc, output = deployment.run_job("globus-roles-transfers")
        outputs.append(output)
        assert rc == 0, output[-4000:]
        emulator.wait_idle(timeout=60)
        rc, output = deployment.run_job("globus-roles-events")
        outputs.append(output)
        assert rc == 0, output[-4000:]
        if os.path.isdir(replica) and same_tree(source, replica):
            break
    assert os.path.isdir(replica) and same_tree(source, replica), "\n".join(o[-3000:] for o in outputs[-2:])
    assert any(task["status"] == "SUCCEEDED" for task in emulator.tasks())
    # The runs went through the service user's files, and said nothing secret.
    assert mode_owner(deployment.path("var/log/globus-roles-transfers.log"))[1] == deployment.user
    for output in outputs:
        for name, value in deployment.secrets.items():
            assert value not in output, name
    # A second run of the same job while the lock is held exits at once (flock -n, status 75).
    lock = deployment.path("var/lib/locks/globus-roles-transfers.run.lock")
    holder = subprocess.Popen(["flock", lock, "sleep", "30"])
    try:
        time.sleep(0.3)
        rc, _output = deployment.run_job("globus-roles-transfers")
        assert rc == 75
    finally:
        holder.kill()
        holder.wait()


def test_dashboard_job_and_nginx(deployment):
    rc, output = deployment.run_job("dashboard")
    assert rc == 0, output[-4000:]
    site = deployment.path("www/site")
    assert os.path.islink(site) and os.path.isfile(os.path.join(site, "index.html"))
    # Serve the rendered site configuration with the real nginx (the role installed it), on loopback.
    work = tempfile.mkdtemp(prefix="nginx-", dir=deployment.path("work"))
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as handle:
        handle.write("pid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp {\n"
                     "  include /etc/nginx/mime.types;\n  include %s;\n}\n"
                     % (work, work, deployment.path("nginx/sites-available/scidata-replication")))
    os.makedirs(os.path.join(os.path.realpath(site), "subdir"))
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", conf, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    base = "http://127.0.0.1:%d" % deployment.dashboard_port
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(base + "/", timeout=5) as response:
                    index = response.read().decode()
                    headers = response.headers
                break
            except OSError:
                assert nginx.poll() is None and time.monotonic() < deadline, nginx.stderr.read()
                time.sleep(0.2)
        assert "<svg" in index or "<img" in index
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        with urllib.request.urlopen(base + "/summary.json", timeout=5) as response:
            json.loads(response.read())
        for method, path, status in (("POST", "/", 403), ("PUT", "/summary.json", 403), ("GET", "/subdir/", 403),
                                     ("GET", "/missing.html", 404)):
            request = urllib.request.Request(base + path, method=method, data=b"x" if method != "GET" else None)
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(request, timeout=5)
            assert error.value.code == status, (method, path)
    finally:
        nginx.terminate()
        nginx.wait(timeout=15)


def test_argument_specs_mirror_the_defaults():
    for role in ROLES:
        base = os.path.join(COLLECTION_ROOT, "roles", role)
        with open(os.path.join(base, "defaults", "main.yml")) as handle:
            defaults = yaml.safe_load(handle) or {}
        with open(os.path.join(base, "meta", "argument_specs.yml")) as handle:
            options = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
        assert sorted(defaults) == sorted(options), role
        for name, value in defaults.items():
            assert options[name].get("default") == value, (role, name)
            assert name.startswith(role + "_"), name
        assert os.path.isfile(os.path.join(base, "README.md")), role


def env_fallbacks():
    names = set()
    for path in glob.glob(os.path.join(COLLECTION_ROOT, "plugins", "*", "*.py")):
        with open(path) as handle:
            for match in re.finditer(r"env_fallback, \[([^\]]+)\]", handle.read()):
                names.update(n.strip().strip("\"'") for n in match.group(1).split(","))
    return names


def test_credential_types_inject_what_the_modules_read():
    read_by_playbooks = set()
    for path in glob.glob(os.path.join(COLLECTION_ROOT, "playbooks", "jobs", "**", "*.yml"), recursive=True):
        with open(path) as handle:
            read_by_playbooks.update(re.findall(r"'(SCIDATA_[A-Z_]+?)_?'", handle.read()))
    modules = env_fallbacks()
    assert {"GLOBUS_CLIENT_ID", "GLOBUS_CLIENT_SECRET", "SCIDATA_STATE_DB", "SCIDATA_STATE_DB_PASSWORD"} <= modules
    injected = set()
    for path in glob.glob(os.path.join(COLLECTION_ROOT, "docs", "credential_types", "*.yml")):
        with open(path) as handle:
            credential_type = yaml.safe_load(handle)
        assert set(credential_type) >= {"name", "kind", "inputs", "injectors"}, path
        fields = {f["id"] for f in credential_type["inputs"]["fields"]}
        for field in credential_type["inputs"]["fields"]:
            if re.search("secret|password|key", field["id"]) and field["id"] != "known_hosts":
                assert field.get("secret"), (path, field["id"])
        for name, template in credential_type["injectors"]["env"].items():
            assert name in modules or name in read_by_playbooks, (path, name)
            assert not name.startswith("ANSIBLE_")
            used = re.findall(r"{{ *([a-z_]+)", template)
            assert all(u in fields or u == "tower" for u in used), (path, name)
            injected.add(name)
    wanted = {"GLOBUS_CLIENT_ID", "GLOBUS_CLIENT_SECRET", "SCIDATA_STATE_DB", "SCIDATA_STATE_DB_PASSWORD",
              "SCIDATA_SMTP_USER", "SCIDATA_SMTP_PASSWORD", "SCIDATA_PORTAL_URL", "SCIDATA_PORTAL_PASSWORD"}
    assert wanted <= injected


def test_job_playbook_mails_its_failure(smtp_sink, tmp_path):
    """The rescue of a job playbook mails the error (scidata.replication.failure_mail), then fails the run."""
    dest = tmp_path / "site"
    dest.mkdir()
    (dest / "not-from-the-module.txt").write_text("replication_report refuses to replace this directory")
    variables = {
        "ansible_python_interpreter": sys.executable,
        "scidata_job_name": "report-" + uuid.uuid4().hex[:6],
        "scidata_job_defaults": {"state_db": str(tmp_path / "state.db")},
        "scidata_replication_report_options": {"dest": str(dest)},
        "scidata_job_mail": {"to": ["ops@example.org"], "from": "jobs@example.org", "host": "127.0.0.1",
                             "port": smtp_sink.info["port"], "security": "none"},
    }
    with open(tmp_path / "vars.json", "w") as handle:
        json.dump(variables, handle)
    before = len(smtp_sink.messages())
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1")
    env.pop("SCIDATA_SMTP_USER", None)
    result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
                             "@%s" % (tmp_path / "vars.json"),
                             os.path.join(COLLECTION_ROOT, "playbooks", "jobs", "replication_report.yml")],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "scidata.replication job %s failed" % variables["scidata_job_name"] in output
    messages = smtp_sink.messages()[before:]
    assert len(messages) == 1, output[-3000:]
    assert messages[0]["Subject"].startswith("[scidata.replication] job %s failed" % variables["scidata_job_name"])
    assert "Render the static site" in messages[0].get_body().get_content()


def test_job_lifecycle_cron_to_systemd_to_absent(deployment):
    """Changing a job's scheduler removes the old schedule's files; state=absent removes everything."""
    play = [{
        "name": "One job defined on transfer_host", "hosts": "target", "become": True, "gather_facts": False,
        "roles": [{"role": "scidata.replication.transfer_host",
                   "vars": {"transfer_host_jobs": [{
                       "name": "lifecycle", "playbook": "globus_task_events", "cron": {"minute": "7"},
                       "scheduler": "{{ lifecycle_scheduler }}", "state": "{{ lifecycle_state }}"}],
                       "transfer_host_job_secrets": {"lifecycle": {"GLOBUS_CLIENT_SECRET": deployment.secrets["client_secret"]}}}}],
    }]
    path = deployment.path("work", "lifecycle.yml")
    with open(path, "w") as handle:
        json.dump(play, handle)
    files = {
        "cron": deployment.path("cron.d/scidata-replication-lifecycle"),
        "service": deployment.path("systemd/scidata-replication-lifecycle.service"),
        "timer": deployment.path("systemd/scidata-replication-lifecycle.timer"),
        "playbook": deployment.path("etc/jobs/lifecycle.yml"),
        "env": deployment.path("etc/secrets/lifecycle.env"),
    }
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="1")
    for scheduler, state, present in (("cron", "present", {"cron", "playbook", "env"}),
                                      ("systemd", "present", {"service", "timer", "playbook", "env"}),
                                      ("systemd", "absent", set())):
        result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", deployment.inventory, path, "-e",
                                 "lifecycle_scheduler=%s lifecycle_state=%s" % (scheduler, state), "--tags", "transfer_host_run"],
                                capture_output=True, text=True, env=env, timeout=300, check=False)
        assert result.returncode == 0, result.stdout[-4000:]
        assert {name for name, f in files.items() if os.path.exists(f)} == present, (scheduler, state)
        assert deployment.secrets["client_secret"] not in result.stdout
