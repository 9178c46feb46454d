"""Atomic writes (DCTNetLib.io.atomic): complete-or-nothing files, disk-full handling, folder checks."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from DCTNetLib.errors import OutputError
from DCTNetLib.io import atomic
from DCTNetLib.io.atomic import (
    atomic_path,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    check_free_space,
    check_writable_dir,
    format_bytes,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def test_write_bytes_and_text_replace_content_and_leave_no_temp_files(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second, longer content")
    assert target.read_bytes() == b"second, longer content"
    atomic_write_text(tmp_path / "b.txt", "héllo\n")
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert _leftovers(tmp_path) == []


def test_large_write_is_complete(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, size=3 * 2**20 + 7, dtype=np.uint8).tobytes()
    atomic_write_bytes(tmp_path / "big.bin", data)
    assert (tmp_path / "big.bin").read_bytes() == data


def test_atomic_path_keeps_the_extension_for_format_sniffing_writers(tmp_path):
    target = tmp_path / "volume.npy"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith("volume.npy") and tmp != target
        np.save(tmp, np.arange(5))  # np.save would append ".npy" to a name without it
    np.testing.assert_array_equal(np.load(target), np.arange(5))
    assert _leftovers(tmp_path) == []


def test_error_inside_block_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("boom")
    assert target.read_text(encoding="utf-8") == "old"
    assert _leftovers(tmp_path) == []


def test_disk_full_becomes_output_error_and_old_file_survives(tmp_path, monkeypatch):
    target = tmp_path / "meta.json"
    target.write_bytes(b'{"old": true}')
    calls = []

    def full_disk_write(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.pwrite(fd, bytes(data[:10]), 0)  # first call writes a little, like a filling disk

    monkeypatch.setattr(atomic.os, "write", full_disk_write)
    with pytest.raises(OutputError, match=r"disk full while writing .*meta\.json"):
        atomic_write_bytes(target, b'{"new": "a much longer payload than fits"}')
    monkeypatch.undo()
    assert len(calls) == 2  # the partial write really happened before the failure
    assert target.read_bytes() == b'{"old": true}'
    assert _leftovers(tmp_path) == []


def test_disk_full_inside_a_library_writer_is_reported_with_the_file(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.ones(3)}, target)
    before = target.read_bytes()

    def failing_save(obj, handle):  # as torch.save fails on a full disk: its C++ writer's message over the OSError
        try:
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OutputError, match=r"disk full while writing .*model\.pt"):
        atomic_torch_save({"w": torch.zeros(3)}, target)
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_torch_save_round_trip_loads_with_weights_only(tmp_path):
    state = {"weight": torch.arange(6.0).reshape(2, 3), "step": 7}
    path = atomic_torch_save(state, tmp_path / "ckpt.pt")
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == 7
    torch.testing.assert_close(loaded["weight"], state["weight"])


def test_missing_folder_is_an_output_error_naming_it(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        atomic_write_bytes(tmp_path / "nope" / "x.bin", b"x")
    with pytest.raises(OutputError, match="does not exist"):
        check_writable_dir(tmp_path / "nope")


def test_check_writable_dir_rejects_a_file_and_accepts_a_folder(tmp_path):
    assert check_writable_dir(tmp_path) == tmp_path
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_writable_dir(tmp_path / "file")
    assert _leftovers(tmp_path) == []


def test_check_writable_dir_rejects_a_read_only_folder(tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        folder = Path("/proc/self")  # root ignores permission bits; procfs refuses new files for everyone
        if not folder.is_dir():
            pytest.skip("no read-only folder available to root")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
    with pytest.raises(OutputError, match="not writable"):
        check_writable_dir(folder)


def test_check_free_space_message_and_parent_fallback(tmp_path):
    free = check_free_space(tmp_path / "not" / "yet" / "made", 1)  # nearest existing parent is used
    assert free > 0
    with pytest.raises(OutputError, match=r"^not enough free disk space: need .+, have .+ at /"):
        check_free_space(tmp_path, 2**62)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 2**20) == "3.0 MiB"
    assert format_bytes(1.5 * 2**30) == "1.5 GiB"


def test_temporary_files_a_killed_run_left_are_removed_by_the_next_write_into_that_folder(tmp_path):
    """`.tmp-*` files and folders stayed after a `kill -9` forever. The next atomic write into the folder removes
    those whose writer (the pid in the name) is gone, and an old-style name without a pid that is older than this
    process; a live writer's temporary file stays, and so does another program's `.tmp-…` file."""
    import subprocess
    import sys
    import time

    from DCTNetLib.io.atomic import atomic_write_text

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [tmp_path / f".tmp-dctnet-{gone.pid}-0a1b2c3d-ct.nii.gz", tmp_path / ".tmp-0a1b2c3d-model.pt"]
        for path in stale:
            path.write_bytes(b"partial")
        old = time.time() - 3600
        os.utime(stale[1], (old, old))
        stale_folder = tmp_path / f".tmp-dctnet-{gone.pid}-0a1b2c3d-folder"
        stale_folder.mkdir()
        (stale_folder / "IM00001.dcm").write_bytes(b"partial")
        kept = [tmp_path / f".tmp-dctnet-{live.pid}-0a1b2c3d-ct.nii.gz",
                tmp_path / f".tmp-dctnet-{os.getpid()}-0a1b2c3d-x.pt", tmp_path / f".tmp-{gone.pid}-another-tool"]
        for path in kept:
            path.write_bytes(b"being written")
        atomic_write_text(tmp_path / "report.json", "{}\n")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in kept] + ["report.json"])
    finally:
        live.kill()
        live.wait()
