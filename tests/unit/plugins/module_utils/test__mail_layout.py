# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The alert mail's default templates: the text part line by line, the HTML part through a parser."""

from __future__ import annotations

from html.parser import HTMLParser

from ansible_collections.scidata.replication.plugins.module_utils._mail import render_alert, table_rows

ADA = {"first_names": "Ada", "last_name": "Lovelace", "email": "ada@example.org"}
ALAN = {"first_names": "Alan", "last_name": "Turing", "email": "alan@example.org"}
GRACE = {"first_names": "Grace", "last_name": "Hopper", "email": ""}
CONTEXT = dict(
    with_details=[
        {"epn": "60001a", "start_time": "2026-01-01T08:00:00+00:00", "end_time": "2026-01-02T08:00:00+00:00",
         "equipment_id": "101", "principal_scientist": ADA, "data_scientists": [ALAN, GRACE]},
        {"epn": "60002b", "start_time": "s", "end_time": "e", "equipment_id": None, "principal_scientist": None,
         "data_scientists": []},
    ],
    without_details=["60003c"], without_details_rows=table_rows(["60003c"]), unknown_count=3, host="sftp.example",
    directory="/data/MX", visit_day_range=30, subject="Unknown ownership of EPNs", generated_at="2026-01-03 10:00 UTC",
)


def test_text_part_line_by_line():
    text, _html = render_alert(CONTEXT)
    assert text.splitlines() == [
        "3 EPN folder(s) on sftp.example:/data/MX have no project in epn_cap_map,",
        "so they are not replicated.",
        "",
        "EPNs with visit details from the facility portal",
        "================================================",
        "",
        "EPN 60001a (equipment 101)",
        "  Visit:               2026-01-01T08:00:00+00:00 to 2026-01-02T08:00:00+00:00",
        "  Principal scientist: Ada Lovelace <ada@example.org>",
        "  Data scientists:     Alan Turing <alan@example.org>",
        "                       Grace Hopper",
        "",
        "EPN 60002b",
        "  Visit:               s to e",
        "  Principal scientist: unknown",
        "  Data scientists:     none listed",
        "",
        "EPNs without visit details in the last 30 days",
        "  60003c",
        "",
        "Add each EPN's base number to epn_cap_map (EPN base number -> project folder) to",
        "replicate it.",
        "",
        "-- ",
        "scidata.replication.epn_alert, 2026-01-03 10:00 UTC",
    ]


class Cells(HTMLParser):
    """The text of each table cell, row by row."""

    def __init__(self):
        super().__init__()
        self.rows, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag == "br" and self.cell is not None:
            self.cell += "|"

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_html_part_parses_into_the_expected_tables():
    _text, html = render_alert(CONTEXT)
    parser = Cells()
    parser.feed(html)
    parser.close()
    assert parser.rows == [
        ["EPN", "Equipment", "Visit start", "Visit end", "Principal scientist", "Data scientists"],
        ["60001a", "101", "2026-01-01T08:00:00+00:00", "2026-01-02T08:00:00+00:00", "Ada Lovelace <ada@example.org>",
         "Alan Turing <alan@example.org>|Grace Hopper"],
        ["60002b", "", "s", "e", "unknown", "none listed"],
        ["60003c"],
    ]
