from __future__ import annotations

import errno
import os
import stat

import pytest

from advkit.errors import OutputError
from advkit.errors import UsageError
from advkit.utils import atomic_path, cleaned_up_on_failure, resolve_device, split_list


def test_atomic_path_renames_only_on_success(tmp_path):
    final = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_path(final) as tmp:
        tmp.write_text("whole")
    assert final.read_text() == "whole"


def test_atomic_path_output_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644


def test_atomic_path_takes_the_longest_name_the_filesystem_allows(tmp_path):
    """A 245-byte name is legal; its temporary sibling (dot, name, 8 random characters, suffix)
    was not, so such an output failed with "File name too long"."""
    final = tmp_path / ("é" * 120 + "x.png")  # 245 bytes in UTF-8
    assert len(final.name.encode()) == 245
    with atomic_path(final, suffix=".h5.partial") as tmp:
        assert len(tmp.name.encode()) <= 255
        tmp.write_text("x")
    assert final.read_text() == "x"


def test_split_list():
    assert split_list(" a, b,,c ,") == ["a", "b", "c"]
    assert split_list("") == [] and split_list(None) == []


def test_a_full_disk_is_an_output_error_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(OutputError, match=r"cannot write .*out.bin: No space left on device"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"part")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):  # anything else passes through as it is
        with atomic_path(target):
            raise ValueError("a bug")


def test_cleaned_up_on_failure_removes_only_what_it_made_and_left_empty(tmp_path):
    made = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with cleaned_up_on_failure(made) as folder:
            (folder / "a" / "b").mkdir(parents=True)
            raise RuntimeError
    assert not made.exists()
    with pytest.raises(RuntimeError):  # a whole file written before the failure stays, with its folders
        with cleaned_up_on_failure(made) as folder:
            (folder / "a" / "b").mkdir(parents=True)
            (folder / "a" / "kept.png").write_bytes(b"png")
            raise RuntimeError
    assert sorted(p.name for p in made.rglob("*")) == ["a", "kept.png"]
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError):  # a folder that was there before is left alone
        with cleaned_up_on_failure(existing):
            raise RuntimeError
    assert existing.is_dir()


def test_resolve_device_refuses_what_cannot_run_here():
    import torch

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(UsageError, match="unsupported device 'meta'"):  # a torch device no kernel here runs on
        resolve_device("meta")
    with pytest.raises(UsageError, match="CUDA device"):  # no such GPU (none at all, or not that many)
        resolve_device(f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}")
    if not torch.backends.mps.is_available():
        with pytest.raises(UsageError, match="no MPS"):
            resolve_device("mps")


def test_auto_precision_reads_the_recorded_choice_and_survives_a_bad_record(tmp_path, monkeypatch):
    """`auto` on a GPU takes the precision recorded for that GPU name in $ADVKIT_HOME/precision.json,
    and strict fp32 when the record is missing, not JSON, not UTF-8 or not a mapping."""
    import torch

    from advkit.precision import resolve_precision

    monkeypatch.setenv("ADVKIT_HOME", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    gpu = torch.device("cuda")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32" and resolve_precision("bf16", gpu) == "bf16"
    assert resolve_precision("auto", gpu) == "fp32"  # no record
    record = tmp_path / "precision.json"
    record.write_text('{"Test GPU": "bf16", "Other": "tf32"}')
    assert resolve_precision("auto", gpu) == "bf16"
    for damaged in (b"[1]", b"\xff\xfe", b'{"Test GPU": "fp8"}', b"{"):
        record.write_bytes(damaged)
        assert resolve_precision("auto", gpu) == "fp32", damaged


def test_exclusive_run_admits_one_run_per_output(tmp_path):
    from advkit.errors import OutputError
    from advkit.utils import exclusive_run

    out = tmp_path / "o.h5"
    with exclusive_run(out):
        assert (tmp_path / ".o.h5.lock").exists()
        with pytest.raises(OutputError, match="o.h5 is being written by another run"):
            with exclusive_run(out):
                pass
        with exclusive_run(tmp_path / "other.h5"):  # (another output in the same folder: its own lock)
            pass
    assert list(tmp_path.iterdir()) == []
    with exclusive_run(out):  # released on exit, also after a failure inside
        pass
    with pytest.raises(ValueError):
        with exclusive_run(out):
            raise ValueError
    with exclusive_run(out):
        pass
