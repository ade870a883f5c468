# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The dashboard in real headless Chromium, for any test that has written one.

Debian's ``chromium`` loads the page through a loopback HTTP server that is also its only
proxy, so every request the browser makes is seen here and none leaves loopback.
``load_dashboard`` checks what holds for every dashboard (no console message, only the site's
own files requested, both charts drawn, the totals equal to the database's) and returns the
parsed DOM for test-specific checks.
"""

from __future__ import annotations

import html.parser
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.parse

from ansible_collections.scidata.replication.plugins.module_utils._report import SITE_FILES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium's own service requests, made whatever the page is (the flags below cannot stop them all);
# the proxy refuses them too, so they never leave loopback either.
BROWSER_SERVICE_HOSTS = {"update.googleapis.com", "accounts.google.com", "clients1.google.com",
                         "clients2.google.com", "optimizationguide-pa.googleapis.com", "redirector.gvt1.com",
                         "safebrowsingohttpgateway.googleapis.com", "content-autofill.googleapis.com"}


def db_totals(db):
    """What the page must show, counted here with plain queries."""
    def count(sql):
        return db.scalar(sql)
    return {
        "items_total": count("SELECT count(*) FROM transfer_items"),
        "items_done": count("SELECT count(*) FROM transfer_items WHERE status = 'SUCCEEDED'"),
        "items_active": count("SELECT count(*) FROM transfer_items WHERE status = 'ACTIVE'"),
        "items_failed": count("SELECT count(*) FROM transfer_items WHERE status = 'FAILED'"),
        "items_pending": count("SELECT count(*) FROM transfer_items WHERE status = 'PENDING'"),
        "tasks": count("SELECT count(*) FROM globus_tasks WHERE task_id IS NOT NULL"),
        "tasks_active": count("SELECT count(*) FROM globus_tasks WHERE status IN ('ACTIVE', 'INACTIVE')"),
        "tasks_failed": count("SELECT count(*) FROM globus_tasks WHERE status = 'FAILED'"),
        "files_transferred": int(count("SELECT SUM(files_transferred) FROM globus_tasks")),
        "bytes_transferred": int(count("SELECT SUM(bytes_transferred) FROM globus_tasks")),
        "epns_synced": count("SELECT count(*) FROM epns WHERE state = 'synced'"),
        "failing": count("SELECT count(*) FROM transfer_items WHERE status = 'FAILED'"),
    }


class LoopbackProxy(object):
    """A loopback HTTP server that is also Chromium's only proxy: it serves the site's files
    for its own address and refuses (and records) everything else."""

    def __init__(self, root, extra=None):
        self.root, self.extra, self.requests = root, dict(extra or {}), []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                url = urllib.parse.urlsplit(self.path)
                local = url.netloc in ("", "127.0.0.1:%d" % proxy.port)
                name = urllib.parse.unquote(url.path).lstrip("/") or "index.html"
                body = None
                if local and name in proxy.extra:
                    body = proxy.extra[name]
                elif local and name in os.listdir(proxy.root):
                    with open(os.path.join(proxy.root, name), "rb") as handle:
                        body = handle.read()
                proxy.requests.append(dict(method="GET", host=url.netloc or "127.0.0.1:%d" % proxy.port,
                                           path=name, local=local, status=200 if body is not None else 403,
                                           client=self.client_address[0]))
                if body is None:
                    self.send_error(403)
                    return
                self.send_response(200)
                kind = "text/html; charset=utf-8" if name.endswith(".html") else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_CONNECT(self):  # noqa: N802
                proxy.requests.append(dict(method="CONNECT", host=self.path.rsplit(":", 1)[0], path=None,
                                           local=False, status=403, client=self.client_address[0]))
                self.send_error(403)

            do_POST = do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def url(self, name):
        return "http://127.0.0.1:%d/%s" % (self.port, name)


def chromium(proxy, url, profile, *action):
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
            "--disable-extensions", "--disable-default-apps", "--no-pings", "--disable-domain-reliability",
            "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter",
            "--user-data-dir=" + profile, "--enable-logging=stderr", "--v=0",
            "--proxy-server=http://127.0.0.1:%d" % proxy.port, "--proxy-bypass-list=<-loopback>",
            "--hide-scrollbars"] + list(action) + [url]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    console = [line for line in completed.stderr.splitlines() if ":CONSOLE" in line]
    return completed.stdout, console


class DomReader(html.parser.HTMLParser):
    """Counts of elements, the totals' data-value attributes, chart contents and all text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.totals, self.text, self.resources = {}, {}, [], []
        self.chart, self.chart_depth, self.chart_shapes, self.chart_text = None, 0, {}, {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if "data-total" in attrs:
            self.totals[attrs["data-total"]] = int(attrs["data-value"])
        for name in ("src", "srcset", "data", "poster"):
            if attrs.get(name):
                self.resources.append(attrs[name])
        if tag == "link" and attrs.get("href"):
            self.resources.append(attrs["href"])
        if self.chart:
            self.chart_depth += 1
            if tag in ("path", "rect", "polyline", "line", "use"):
                self.chart_shapes[self.chart] += 1
        elif attrs.get("id", "").startswith("chart-"):
            self.chart, self.chart_depth = attrs["id"], 1
            self.chart_shapes[self.chart], self.chart_text[self.chart] = 0, []

    def handle_endtag(self, tag):
        if self.chart:
            self.chart_depth -= 1
            if self.chart_depth == 0:
                self.chart = None

    def handle_data(self, data):
        self.text.append(data)
        if self.chart:
            self.chart_text[self.chart].append(data)


def load_dashboard(dest, workdir, screenshot, expected_totals):
    """Open ``dest``/index.html in Chromium, check it, keep a screenshot; returns a DomReader."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=workdir)
    canary = b"<!DOCTYPE html><title>c</title><link rel=icon href='data:,'><script>console.error('canary')</script>"
    with LoopbackProxy(dest, extra={"canary-console.html": canary}) as proxy:
        # The console capture works: a page that logs an error is seen.
        _dom, console = chromium(proxy, proxy.url("canary-console.html"), profile, "--dump-dom")
        assert any("canary" in line for line in console), console
        proxy.requests[:] = []
        dom, console = chromium(proxy, proxy.url("index.html"), profile, "--dump-dom")
        requests = list(proxy.requests)
        os.makedirs(os.path.dirname(screenshot), exist_ok=True)
        if os.path.exists(screenshot):
            os.unlink(screenshot)
        _out, shot_console = chromium(proxy, proxy.url("index.html"), profile, "--screenshot=" + screenshot,
                                      "--window-size=1280,2600")
    with open(os.path.splitext(screenshot)[0] + "-dom.html", "w", encoding="utf-8") as handle:
        handle.write(dom)

    # No console message at all (the page has no script: CSP violations and load errors would show).
    assert console == [] and shot_console == [], console + shot_console
    # Every request went to the loopback proxy; the page asked only for its own files.
    assert all(r["client"] == "127.0.0.1" for r in requests)
    page_requests = [r for r in requests if r["local"]]
    assert page_requests and all(r["path"] in SITE_FILES and r["status"] == 200 for r in page_requests), requests
    foreign = [r for r in requests if not r["local"]]
    assert all(r["host"].split(":")[0] in BROWSER_SERVICE_HOSTS and r["status"] == 403 for r in foreign), foreign
    assert os.path.getsize(screenshot) > 20000

    reader = DomReader()
    reader.feed(dom)
    # Charts: inline SVG with drawn shapes and axis text.
    assert reader.tags.get("svg", 0) >= 2
    for chart in ("chart-bytes", "chart-tasks"):
        assert reader.chart_shapes.get(chart, 0) > 20, (chart, reader.chart_shapes)
        assert "".join(reader.chart_text[chart]).strip(), chart
    # Totals in the page are the database's counts; the page carries no script.
    for key, value in expected_totals.items():
        assert reader.totals[key] == value, key
    assert reader.tags.get("script", 0) == 0
    assert all(r.startswith("data:") for r in reader.resources), reader.resources
    return reader
