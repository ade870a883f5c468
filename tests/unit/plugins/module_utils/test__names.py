# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one escaping of names that are not valid UTF-8, and the module base that applies it."""

from __future__ import annotations

import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.scidata.replication.plugins.module_utils._module import ReplicationModule
from ansible_collections.scidata.replication.plugins.module_utils._names import shown_data, shown_name

RAW = b"scan\xff\xfe_0001 \xc3\xa9.cbf"


@pytest.mark.parametrize("name, shown", [
    (RAW, "scan\\xff\\xfe_0001 \u00e9.cbf"),
    (RAW.decode("utf-8", "surrogateescape"), "scan\\xff\\xfe_0001 \u00e9.cbf"),
    ("\udcff", "\\xff"),                     # a JSON "\udcff" from the portal
    ("12345\ud800a", "12345\\xed\\xa0\\x80a"),  # a lone surrogate outside the escape range
    ("ascii only", "ascii only"),
    ("\u00fcn\u00efc\u00f6d\u00e9 \u2713", "\u00fcn\u00efc\u00f6d\u00e9 \u2713"),
])
def test_shown_name(name, shown):
    assert shown_name(name) == shown
    shown_name(name).encode("utf-8")  # valid UTF-8, whatever came in


def test_shown_data_walks_keys_and_values():
    bad = RAW.decode("utf-8", "surrogateescape")
    data = {bad: [bad, {"path": bad, "n": 3}], "ok": (bad, None, 1.5)}
    shown = shown_data(data)
    text = shown_name(RAW)
    assert shown == {text: [text, {"path": text, "n": 3}], "ok": [text, None, 1.5]}
    json.dumps(shown, ensure_ascii=False).encode("utf-8")


def run_module(args, work):
    with patch_module_args(args):
        module = ReplicationModule(argument_spec={}, supports_check_mode=True)
        with pytest.raises(SystemExit) as exit_info:
            module.run(work, lock=False)
    return exit_info.value.code


def test_unexpected_error_is_one_clear_failure_with_a_log_line(tmp_path, capsys):
    log = tmp_path / "run.jsonl"

    def work(_module):
        return {"rows": [1, 2]}["missing"]

    code = run_module({"state_db": str(tmp_path / "state.db"), "log_file": str(log)}, work)
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and result["failed"] is True
    assert result["msg"].endswith(" stopped on an unexpected error: KeyError: 'missing'")
    entry = json.loads(log.read_text())
    assert entry["failed"] is True and entry["msg"] == result["msg"]


def test_result_and_log_show_bad_names_escaped(tmp_path, capsys):
    log = tmp_path / "run.jsonl"
    bad = RAW.decode("utf-8", "surrogateescape")

    def work(module):
        module.warn("cannot read %s" % bad)
        return {"changed": False, "paths": [bad]}

    code = run_module({"state_db": str(tmp_path / "state.db"), "log_file": str(log)}, work)
    out = capsys.readouterr().out
    out.encode("utf-8")
    result = json.loads(out)
    assert code == 0 and result["paths"] == [shown_name(RAW)]
    assert [w["event"]["msg"] for w in result["warnings"]] == ["cannot read " + shown_name(RAW)]
    assert json.loads(log.read_bytes().decode("utf-8"))["paths"] == [shown_name(RAW)]
    assert not os.path.exists(str(tmp_path / "state.db"))
