# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Transfers, deletes and file operations really happen on disk, with the service's semantics."""

from __future__ import annotations

import datetime
import os
import time
import uuid

import globus_sdk
import pytest
from emu_support import DST_ID, SRC_ID, read, transfer, tree, write

OLD = 1_600_000_000  # 2020-09-13, well before "now"


def test_recursive_transfer_copies_bytes_and_preserves_mtime(tc, emulator, src, dst):
    payloads = {"run1/a.nc": os.urandom(3000), "run1/sub/b.nc": os.urandom(70000), "run1/sub/deep/c.txt": b"c"}
    for rel, data in payloads.items():
        write(src, rel, data, mtime=OLD)
    task = transfer(tc, emulator, [("/run1", "/replica/run1", True)], preserve_timestamp=True)

    assert task["status"] == "SUCCEEDED"
    assert tree(dst) == {"replica/" + rel for rel in payloads}
    for rel, data in payloads.items():
        assert read(dst, "replica/" + rel) == data
        assert int(os.stat(os.path.join(dst, "replica", rel)).st_mtime) == OLD
    assert task["files"] == task["files_transferred"] == 3
    assert task["directories"] == 3  # run1, sub, deep
    assert task["bytes_transferred"] == sum(len(d) for d in payloads.values())
    assert task["bytes_checksummed"] == task["bytes_transferred"]  # verify_checksum defaults to true
    assert task["subtasks_pending"] == 0 and task["subtasks_succeeded"] == task["subtasks_total"]
    assert task["completion_time"] and task["nice_status"] is None and task["fatal_error"] is None

    pairs = {(r["source_path"], r["destination_path"]) for r in tc.task_successful_transfers(task["task_id"])}
    assert pairs == {("/run1/" + rel[5:], "/replica/run1/" + rel[5:]) for rel in payloads}
    admin = emulator.task(task["task_id"])
    assert len(admin["successful_transfers"]) == 3


def test_without_preserve_timestamp_destination_gets_a_new_mtime(tc, emulator, src, dst):
    write(src, "f.bin", b"x" * 10, mtime=OLD)
    before = time.time()
    transfer(tc, emulator, [("/f.bin", "/f.bin")])
    assert os.stat(os.path.join(dst, "f.bin")).st_mtime >= before - 1


def test_sync_level_mtime_skips_files_that_are_not_newer(tc, emulator, src, dst):
    for name in ("a", "b", "c"):
        write(src, f"ds/{name}.dat", name * 100, mtime=OLD)
    first = transfer(tc, emulator, [("/ds", "/ds", True)], sync_level="mtime", preserve_timestamp=True)
    assert first["files_transferred"] == 3
    inode_before = os.stat(os.path.join(dst, "ds", "a.dat")).st_ino

    second = transfer(tc, emulator, [("/ds", "/ds", True)], sync_level="mtime", preserve_timestamp=True)
    assert second["status"] == "SUCCEEDED"
    assert second["files_transferred"] == 0
    assert second["files_skipped"] == 3
    assert second["bytes_transferred"] == 0
    assert os.stat(os.path.join(dst, "ds", "a.dat")).st_ino == inode_before
    assert list(tc.task_successful_transfers(second["task_id"])) == []

    write(src, "ds/b.dat", "changed", mtime=OLD + 3600)
    third = transfer(tc, emulator, [("/ds", "/ds", True)], sync_level=2, preserve_timestamp=True)
    assert (third["files_transferred"], third["files_skipped"]) == (1, 2)
    assert read(dst, "ds/b.dat") == b"changed"


def test_sync_levels_exists_size_and_checksum(tc, emulator, src, dst):
    write(src, "same_size.txt", "AAAA")
    write(src, "other_size.txt", "BBBBBB")
    write(src, "new.txt", "new")
    write(dst, "same_size.txt", "aaaa")
    write(dst, "other_size.txt", "bb")

    exists = transfer(tc, emulator, [(f"/{n}", f"/{n}") for n in ("same_size.txt", "other_size.txt", "new.txt")],
                      sync_level="exists")
    assert (exists["files_transferred"], exists["files_skipped"]) == (1, 2)
    assert read(dst, "same_size.txt") == b"aaaa" and read(dst, "other_size.txt") == b"bb"

    size = transfer(tc, emulator, [("/same_size.txt", "/same_size.txt"), ("/other_size.txt", "/other_size.txt")],
                    sync_level="size")
    assert (size["files_transferred"], size["files_skipped"]) == (1, 1)
    assert read(dst, "other_size.txt") == b"BBBBBB" and read(dst, "same_size.txt") == b"aaaa"

    checksum = transfer(tc, emulator, [("/same_size.txt", "/same_size.txt"), ("/other_size.txt", "/other_size.txt")],
                        sync_level="checksum")
    assert (checksum["files_transferred"], checksum["files_skipped"]) == (1, 1)
    assert read(dst, "same_size.txt") == b"AAAA"
    assert checksum["sync_level"] == 3


def test_filter_rules_and_delete_destination_extra(tc, emulator, src, dst):
    write(src, "d/keep.nc", "k")
    write(src, "d/.hidden_file", "h")
    write(src, "d/.hidden_dir/inner.nc", "i")
    write(src, "d/scratch/tmp.nc", "t")
    write(dst, "d/stale.nc", "old")
    write(dst, "d/.hidden_file", "dest copy is protected by the filter")
    data = globus_sdk.TransferData(SRC_ID, DST_ID, delete_destination_extra=True)
    data.add_item("/d", "/d", recursive=True)
    data.add_filter_rule(".*", method="exclude", type="file")  # ESGF: hidden files, not hidden dirs
    data.add_filter_rule("scratch", method="exclude", type="dir")
    task_id = tc.submit_transfer(data)["task_id"]
    emulator.wait_idle()
    task = tc.get_task(task_id)
    assert task["status"] == "SUCCEEDED"
    assert tree(dst) == {"d/keep.nc", "d/.hidden_dir/inner.nc", "d/.hidden_file"}
    assert read(dst, "d/.hidden_file") == b"dest copy is protected by the filter"
    assert task["filter_rules"][0] == {"DATA_TYPE": "filter_rule", "method": "exclude", "name": ".*", "type": "file"}


def test_duplicate_submission_id_returns_original_task(tc, emulator, src, dst):
    write(src, "x.txt", "once")
    submission_id = tc.get_submission_id()["value"]
    data = globus_sdk.TransferData(SRC_ID, DST_ID, submission_id=submission_id, label="first")
    data.add_item("/x.txt", "/x.txt")
    first = tc.submit_transfer(data)
    emulator.wait_idle()
    os.remove(os.path.join(dst, "x.txt"))

    data["label"] = "second attempt"
    again = tc.submit_transfer(data)
    emulator.wait_idle()
    assert first["code"] == "Accepted" and first.http_status == 202
    assert again["code"] == "Duplicate" and again.http_status == 200
    assert again["task_id"] == first["task_id"] and again["submission_id"] == submission_id
    tasks = emulator.tasks()
    assert [t["task_id"] for t in tasks] == [first["task_id"]]
    assert tasks[0]["label"] == "first"
    assert not os.path.exists(os.path.join(dst, "x.txt"))  # nothing ran a second time


@pytest.mark.parametrize("label", ["x" * 129, "two\nlines", "carriage\rreturn", " leading", "trailing "])
def test_invalid_labels_are_rejected(tc, emulator, src, label):
    write(src, "x.txt", "x")
    data = globus_sdk.TransferData(SRC_ID, DST_ID, label=label)
    data.add_item("/x.txt", "/x.txt")
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.submit_transfer(data)
    assert caught.value.http_status == 400
    assert caught.value.code == "ClientError.BadRequest"
    assert "label" in caught.value.message.lower()
    assert emulator.tasks() == []


def test_longest_valid_label_is_accepted(tc, emulator, src):
    write(src, "x.txt", "x")
    task = transfer(tc, emulator, [("/x.txt", "/x.txt")], label="L" * 128)
    assert task["label"] == "L" * 128


def test_missing_source_fails_the_task_without_skip_source_errors(tc, emulator, src, dst):
    write(src, "present.txt", "p")
    task = transfer(tc, emulator, [("/missing.txt", "/missing.txt"), ("/present.txt", "/present.txt")])
    assert task["status"] == "FAILED"
    assert task["fatal_error"] == {"code": "FILE_NOT_FOUND", "description": "file not found"}
    assert tree(dst) == set()
    errors = list(tc.task_event_list(task["task_id"], query_params={"filter": "is_error:1"}))
    assert errors[0]["code"] == "FILE_NOT_FOUND"


def test_skip_source_errors_records_skipped_paths(tc, emulator, src, dst):
    write(src, "present.txt", "p")
    task = transfer(tc, emulator, [("/missing.txt", "/missing.txt"), ("/present.txt", "/present.txt")],
                    skip_source_errors=True)
    assert task["status"] == "SUCCEEDED"
    assert task["subtasks_skipped_errors"] == 1
    assert tree(dst) == {"present.txt"}
    skipped = list(tc.task_skipped_errors(task["task_id"]))
    assert [(s["source_path"], s["error_code"]) for s in skipped] == [("/missing.txt", "FILE_NOT_FOUND")]
    succeeded = [r["source_path"] for r in tc.task_successful_transfers(task["task_id"])]
    assert succeeded == ["/present.txt"]  # skipped paths are not successful transfers


def test_paths_cannot_escape_the_collection_root(tc, emulator, src, dst):
    write(src, "ok.txt", "ok")
    task = transfer(tc, emulator, [("/ok.txt", "/../outside.txt")])
    assert task["status"] == "FAILED" and task["fatal_error"]["code"] == "PERMISSION_DENIED"
    assert not os.path.exists(os.path.join(os.path.dirname(str(dst)), "outside.txt"))
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.operation_ls(SRC_ID, path="/../")
    assert (caught.value.http_status, caught.value.code) == (403, "EndpointPermissionDenied")


def test_deadline_expires_a_task(tc, emulator, src, dst):
    emulator.configure(transfer_rate_bytes_per_second=2000)
    write(src, "big.bin", b"0" * 20000)
    deadline = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 1))
    task = transfer(tc, emulator, [("/big.bin", "/big.bin")], deadline=deadline)
    assert task["status"] == "FAILED"
    assert task["fatal_error"]["code"] == "EXPIRED"
    assert task["subtasks_expired"] >= 1
    assert next(iter(tc.task_event_list(task["task_id"], limit=1)))["code"] == "EXPIRED"


def test_delete_task_removes_files(tc, emulator, src):
    write(src, "old/a.txt", "a")
    write(src, "old/sub/b.txt", "b")
    write(src, "single.txt", "s")
    data = globus_sdk.DeleteData(SRC_ID, recursive=True, ignore_missing=True)
    data.add_item("/old")
    data.add_item("/single.txt")
    data.add_item("/not-there")
    task_id = tc.submit_delete(data)["task_id"]
    emulator.wait_idle()
    task = tc.get_task(task_id)
    assert task["type"] == "DELETE" and task["status"] == "SUCCEEDED"
    assert task["destination_endpoint_id"] is None
    assert task["files"] == 3 and task["directories"] == 2
    assert os.listdir(src) == []


def test_delete_directory_requires_recursive(tc, emulator, src):
    write(src, "keep/a.txt", "a")
    data = globus_sdk.DeleteData(SRC_ID)
    data.add_item("/keep")
    task_id = tc.submit_delete(data)["task_id"]
    emulator.wait_idle()
    task = tc.get_task(task_id)
    assert task["status"] == "FAILED" and task["fatal_error"]["code"] == "IS_A_DIRECTORY"
    assert tree(src) == {"keep/a.txt"}


def test_ls_mkdir_stat_rename_act_on_disk(tc, emulator, src):
    write(src, "dir/a.txt", "abc", mtime=OLD)
    write(src, "dir/.dot", "d")
    os.symlink("a.txt", os.path.join(src, "dir", "link"))
    listing = tc.operation_ls(SRC_ID, path="/dir")
    entries = {e["name"]: e for e in listing}
    assert set(entries) == {"a.txt", ".dot", "link"}
    assert entries["a.txt"]["size"] == 3 and entries["a.txt"]["type"] == "file"
    assert entries["a.txt"]["last_modified"] == "2020-09-13 12:26:40+00:00"
    assert entries["link"]["link_target"] == "a.txt"
    assert listing["path"] == "/dir/" and listing["total"] == 3
    assert {e["name"] for e in tc.operation_ls(SRC_ID, path="/dir", show_hidden=False)} == {"a.txt", "link"}
    assert [e["name"] for e in tc.operation_ls(SRC_ID, path="/dir", filter="name:~*.txt")] == ["a.txt"]

    made = tc.operation_mkdir(SRC_ID, "/dir/new")
    assert made["code"] == "DirectoryCreated" and os.path.isdir(os.path.join(src, "dir", "new"))
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.operation_mkdir(SRC_ID, "/dir/new")
    assert (caught.value.http_status, caught.value.code) == (502, "ExternalError.MkdirFailed.Exists")

    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.operation_ls(SRC_ID, path="/nope")
    assert (caught.value.http_status, caught.value.code) == (404, "ClientError.NotFound")
    assert tc.operation_stat(SRC_ID, "/dir/a.txt")["size"] == 3

    tc.operation_rename(SRC_ID, "/dir/a.txt", "/dir/b.txt")
    assert tree(src) == {"dir/b.txt", "dir/.dot", "dir/link"}
    assert {e["name"]: e["type"] for e in tc.operation_ls(SRC_ID, path="/dir")}["link"] == "invalid_symlink"


def test_unknown_collection_is_endpoint_not_found(tc, emulator, src):
    write(src, "a", "a")
    data = globus_sdk.TransferData(SRC_ID, str(uuid.uuid4()))
    data.add_item("/a", "/a")
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.submit_transfer(data)
    assert (caught.value.http_status, caught.value.code) == (404, "EndpointNotFound")
    assert emulator.tasks() == []


def test_naive_utc_deadline_string_is_accepted(tc, emulator, src):
    """globus_sync_directory sends ``str(datetime.utcnow() + delta)``: naive, space-separated, UTC."""
    write(src, "d.txt", "d")
    moment = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(hours=2)
    task = transfer(tc, emulator, [("/d.txt", "/d.txt")], deadline=str(moment))
    assert task["status"] == "SUCCEEDED"
    assert task["deadline"] == moment.replace(microsecond=0).isoformat() + "+00:00"
    data = globus_sdk.TransferData(SRC_ID, DST_ID, deadline="next tuesday")
    data.add_item("/d.txt", "/d.txt")
    with pytest.raises(globus_sdk.TransferAPIError) as caught:
        tc.submit_transfer(data)
    assert caught.value.http_status == 400
