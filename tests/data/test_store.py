from __future__ import annotations

import contextlib
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from advkit.data.store import (
    PairDataset,
    PairStore,
    PairStoreWriter,
    merge_stores,
    quantize_delta,
    reconstruct_adv,
)
from advkit.errors import OutputError, StoreFormatError

GRID = [1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 5e-3, 1e-2, 3e-2, 5e-2, 1e-1, 3e-1, 5e-1]


def test_quantized_delta_stays_in_ball_and_round_trips_within_1pct_of_eps():
    gen = torch.Generator().manual_seed(0)
    clean_u8 = torch.randint(0, 256, (len(GRID), 16, 16, 3), generator=gen, dtype=torch.uint8)
    eps = torch.tensor(GRID, dtype=torch.float32)
    clean = clean_u8.float() / 255
    # the worst case for the bound: a perturbation sitting exactly on the sphere
    sign = torch.randint(0, 2, clean.shape, generator=gen).float() * 2 - 1
    adv = (clean + sign * eps.view(-1, 1, 1, 1)).clamp(0, 1)
    d16 = quantize_delta(adv - clean, eps)
    assert d16.dtype == torch.float16
    assert torch.all(d16.float().abs().amax((1, 2, 3)) <= eps)
    stored = reconstruct_adv(clean_u8.numpy(), d16.numpy()).permute(0, 2, 3, 1)
    err = (stored - adv).abs().amax((1, 2, 3))
    assert torch.all(err <= 0.01 * eps), (err / eps).max()
    assert stored.min() >= 0 and stored.max() <= 1


def _write_store(path, rows=6, shape=(5, 7, 3), shard=None, offset=0, attack=None):
    w = PairStoreWriter.create(
        path,
        rows=rows,
        image_shape=shape,
        source={"kind": "test"},
        model="m",
        attack=attack or {"name": "test"},
        seed=1,
        class_names=["a", "b"],
        precision="fp32",
        config={"k": 1},
        extra_attrs={"shard": shard or "0/1", "row_offset": offset},
    )
    rng = np.random.default_rng(offset)
    clean = rng.integers(0, 256, (rows, *shape), dtype=np.uint8)
    delta = (rng.uniform(-0.01, 0.01, (rows, *shape))).astype(np.float16)
    w.write_rows(
        0,
        clean=clean,
        delta=delta,
        label=np.arange(rows) % 2,
        eps=np.full(rows, 0.01, np.float32),
        source_index=np.arange(rows) + offset,
        pred_clean=np.arange(rows) % 2,
        pred_adv=np.zeros(rows, np.int64),
    )
    w.finish()
    return clean, delta


def test_write_read_and_layout(tmp_path):
    clean, delta = _write_store(tmp_path / "s.h5")
    with PairStore(tmp_path / "s.h5", require_complete=True) as s:
        c, d = s.raw(slice(None))
        assert np.array_equal(c, clean) and np.array_equal(d, delta)
        assert s.info.complete and s.info.rows_done == 6 and s.info.class_names == ["a", "b"]
        summary = s.summary()
        assert summary["per_eps"][0]["acc_clean"] == 1.0 and summary["per_eps"][0]["acc_adv"] == 0.5
    with h5py.File(tmp_path / "s.h5", "r") as f:  # readable by a plain HDF5 reader, SPEC layout
        assert f.attrs["advkit_format"] == "pairs" and f.attrs["format_version"] == 1
        assert f["clean"].chunks == (1, 5, 7, 3) and f["clean"].compression == "gzip" and f["clean"].shuffle
        assert f["delta"].dtype == np.float16 and f["eps"].dtype == np.float32
        for k in ("label", "source_index", "pred_clean", "pred_adv"):
            assert f[k].dtype == np.int64
    with PairStore(tmp_path / "s.h5") as store:  # no rows selected: empty arrays
        assert store.raw(slice(3, 3))[1].shape == (0, 5, 7, 3) and store.images([])[1].shape == (0, 3, 5, 7)


def test_reader_is_read_only(tmp_path):
    _write_store(tmp_path / "s.h5")
    with PairStore(tmp_path / "s.h5") as s:
        with pytest.raises(OSError, match="no write intent"):
            s._file["label"][0] = 5


def test_validation_messages(tmp_path):
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(StoreFormatError, match="not a readable HDF5"):
        PairStore(tmp_path / "text.h5")
    with pytest.raises(StoreFormatError, match="not found"):
        PairStore(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(StoreFormatError, match="not an advkit store"):
        PairStore(tmp_path / "other.h5")
    _write_store(tmp_path / "v.h5")
    with h5py.File(tmp_path / "v.h5", "r+") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(StoreFormatError, match="version 2"):
        PairStore(tmp_path / "v.h5")
    _write_store(tmp_path / "k.h5")
    with h5py.File(tmp_path / "k.h5", "r+") as f:
        f.attrs["advkit_format"] = "defended"
    with pytest.raises(StoreFormatError, match="not a pair store"):
        PairStore(tmp_path / "k.h5")
    # attributes of the wrong type: "internal error: ValueError" and "np.int64(5)" before
    with h5py.File(tmp_path / "k.h5", "r+") as f:
        f.attrs["advkit_format"] = 5
    with pytest.raises(StoreFormatError, match="is an advkit 5 store, not a pair store"):
        PairStore(tmp_path / "k.h5")
    with h5py.File(tmp_path / "v.h5", "r+") as f:
        f.attrs["format_version"] = "x"
    with pytest.raises(StoreFormatError, match="format version -1"):
        PairStore(tmp_path / "v.h5")
    _write_store(tmp_path / "t.h5")
    data = (tmp_path / "t.h5").read_bytes()
    (tmp_path / "trunc.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreFormatError):
        PairStore(tmp_path / "trunc.h5")


def _damage(path, offset, size):
    """Invert ``size`` bytes of the file at ``offset``."""
    data = bytearray(path.read_bytes())
    data[offset : offset + size] = bytes(b ^ 0xFF for b in data[offset : offset + size])
    path.write_bytes(bytes(data))


def test_damaged_stores_fail_with_one_line(tmp_path):
    """A file whose superblock opens but whose parts are damaged: the damage surfaces when the part is
    read, as a StoreFormatError naming it, never as h5py's OSError or KeyError."""
    _write_store(tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        chunk = f["delta"].id.get_chunk_info(2)  # row 2's compressed image
        header = h5py.h5o.get_info(f["label"].id).addr  # the label dataset's (checksummed) object header
    for name, offset, size in (("chunk", chunk.byte_offset + chunk.size // 2, 8), ("header", header + 8, 8)):
        damaged = tmp_path / f"{name}.h5"
        damaged.write_bytes((tmp_path / "s.h5").read_bytes())
        _damage(damaged, offset, size)
        if name == "header":
            with pytest.raises(StoreFormatError, match=r"header.h5 is damaged: cannot read its layout \(.*checksum"):
                PairStore(damaged)
            continue
        with PairStore(damaged) as store:
            store.images(slice(0, 2))  # undamaged rows still read
            with pytest.raises(StoreFormatError, match=r"chunk.h5 is damaged: cannot read rows 0..end"):
                store.images(slice(None))
            with pytest.raises(StoreFormatError, match="cannot read rows 2..3"):
                store.raw([2, 3])
        with pytest.raises(StoreFormatError, match="cannot read row 2"):
            PairDataset(damaged)[2]


def test_verify_names_each_bad_row(tmp_path):
    """Each kind of damage on its own row; verify finds exactly those rows."""
    path = tmp_path / "v.h5"
    clean, delta = _write_store(path, rows=8, attack={"name": "pgd", "norm": "linf"})
    with h5py.File(path, "r+") as f:  # deltas as gen-adv writes them: inside the ball and [0, 1]
        base = torch.from_numpy(clean).float() / 255
        adv = (base + torch.from_numpy(delta).float()).clamp(0, 1)
        f["delta"][...] = quantize_delta(adv - base, torch.full((8,), 0.01)).numpy()
    with PairStore(path) as store:
        report = store.verify()
        assert report["ok"] and report["problems"] == {} and report["rows_done"] == 8
        assert "outside_ball" in report["checked"] and "prediction_mismatch" not in report["checked"]
    with h5py.File(path, "r+") as f:
        delta = f["delta"][...]
        delta[1, 0, 0, 0] = 0.02  # the rows' eps is 0.01
        delta[2, 1, 1, 1] = np.nan
        delta[6, 0, 0, 0] = np.nextafter(np.float16(-0.01), np.float16(0))  # on the sphere, as written: allowed
        f["clean"][6] = np.full(f["clean"].shape[1:], 128, np.uint8)
        f["delta"][...] = delta
        f["label"][3] = 2  # two classes
        f["pred_adv"][7] = -2
        f["eps"][4] = 0
        chunk = f["clean"].id.get_chunk_info(5)
    _damage(path, chunk.byte_offset + chunk.size // 2, 6)
    with PairStore(path) as store:
        report = store.verify(batch_rows=3)
    assert not report["ok"]
    assert {check: found["first"] for check, found in report["problems"].items()} == {
        "outside_ball": [1], "non_finite": [2], "bad_label": [3], "bad_eps": [4], "unreadable": [5],
        "bad_prediction": [7]}
    # readers (bench, defend, train-denoiser) refuse such rows instead of computing from them
    with PairStore(path) as store:
        with pytest.raises(StoreFormatError, match=r"row 1 holds a perturbation outside its eps ball \(1 of these 2"):
            store.raw(slice(0, 2))
        with pytest.raises(StoreFormatError, match="row 2 holds a NaN or infinite perturbation.*store verify"):
            store.images(np.array([0, 2, 3]))
        assert store.images([0, 3, 6])[1].shape == (3, 3, 5, 7)
    # a store whose deltas no radius bounds (a defended one) is not held to the ball
    _write_store(tmp_path / "d.h5", attack={"name": "pgd", "norm": "linf"})
    with h5py.File(tmp_path / "d.h5", "r+") as f:
        f.attrs["defense"] = "{}"
        f["delta"][...] = np.zeros(f["delta"].shape, np.float16)
        f["delta"][0] = np.full(f["delta"].shape[1:], 0.2, np.float16) * (f["clean"][0] < 200)
    with PairStore(tmp_path / "d.h5") as store:
        report = store.verify()
        assert store.raw(slice(None))[1].shape == (6, 5, 7, 3)
    assert report["ok"] and "outside_ball" not in report["checked"]


def test_resume_with_different_config_is_refused(tmp_path):
    w = PairStoreWriter.create(
        tmp_path / "p.h5", rows=2, image_shape=(4, 4, 3), source={}, model="m", attack={}, seed=0,
        class_names=None, precision="fp32", config={"eps": [0.1]},
    )
    w.close()
    with pytest.raises(StoreFormatError, match="different arguments.*eps"):
        PairStoreWriter.resume(tmp_path / "p.h5", {"eps": [0.2]})
    PairStoreWriter.resume(tmp_path / "p.h5", {"eps": [0.1]}).close()
    # a partial of other rows or image size (edited, or copied from elsewhere) was finished as complete
    with pytest.raises(StoreFormatError, match="holds 2 rows of 4x4 images, but this run makes 3 rows of 4x4"):
        PairStoreWriter.resume(tmp_path / "p.h5", {"eps": [0.1]}, rows=3, image_shape=(4, 4, 3))
    with pytest.raises(StoreFormatError, match="but this run makes 2 rows of 16x16"):
        PairStoreWriter.resume(tmp_path / "p.h5", {"eps": [0.1]}, rows=2, image_shape=(16, 16, 3))
    PairStoreWriter.resume(tmp_path / "p.h5", {"eps": [0.1]}, rows=2, image_shape=(4, 4, 3)).close()
    # HDF5 opened a zero-byte file for writing as a new, empty one
    (tmp_path / "z.h5").touch()
    with pytest.raises(StoreFormatError, match=r"z.h5 is empty \(0 bytes\)"):
        PairStoreWriter.resume(tmp_path / "z.h5", {})
    assert (tmp_path / "z.h5").stat().st_size == 0


@contextlib.contextmanager
def _process_holding(path, code):
    """A Python process that runs ``code`` (which prints "open" once it holds ``path``) until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _killed_writer(path, config, size=4, write_rows=False):
    """A partial store of 2 rows of ``size``×``size`` images (written, with ``write_rows``) whose
    writer was killed (HDF5's open-for-write mark left in the file)."""
    code = ("import sys, numpy as np; from advkit.data.store import PairStoreWriter as W; "
            f"w = W.create(sys.argv[1], rows=2, image_shape=({size}, {size}, 3), source={{}}, model='m', "
            f"attack={{}}, seed=0, class_names=None, precision='fp32', config={config!r}); z = np.zeros(2, np.int64); "
            + (f"w.write_rows(0, clean=np.random.default_rng(0).integers(0, 256, (2, {size}, {size}, 3), "
               f"dtype=np.uint8), delta=np.zeros((2, {size}, {size}, 3), np.float16), label=z, "
               "eps=np.ones(2, np.float32), source_index=z, pred_clean=z, pred_adv=z); " if write_rows else "")
            + "print('open', flush=True); import time; time.sleep(60)")
    with _process_holding(path, code):
        pass


def test_a_killed_partial_is_checked_before_it_is_rebuilt(tmp_path):
    path = tmp_path / "k.h5"
    _killed_writer(path, {"eps": [0.1]})
    before = path.read_bytes()
    with pytest.raises(StoreFormatError, match="different arguments"):
        PairStoreWriter.resume(path, {"eps": [0.2]})
    with pytest.raises(StoreFormatError, match="holds 2 rows"):
        PairStoreWriter.resume(path, {"eps": [0.1]}, rows=5, image_shape=(4, 4, 3))
    assert path.read_bytes() == before  # (refused without rewriting it)
    w = PairStoreWriter.resume(path, {"eps": [0.1]}, rows=2, image_shape=(4, 4, 3))
    assert w.done_mask().tolist() == [False, False]
    w.close()


def test_a_killed_partial_with_a_damaged_row_is_one_line(tmp_path):
    """Its rows are copied into a fresh file on resume: a chunk that did not decompress was an
    "internal error: OSError"."""
    path = tmp_path / "k.h5"
    _killed_writer(path, {}, size=8, write_rows=True)
    with h5py.File(path, "r", swmr=True) as f:
        chunk = f["clean"].id.get_chunk_info(1)
    _damage(path, chunk.byte_offset + chunk.size // 2, 6)
    before = path.read_bytes()
    with pytest.raises(StoreFormatError, match="k.h5 is damaged: cannot read the rows of the unfinished run"):
        PairStoreWriter.resume(path, {}, rows=2, image_shape=(8, 8, 3))
    assert path.read_bytes() == before


def test_finish_waits_for_a_reader_of_the_partial(tmp_path):
    """The writer reopens the file to mark it complete; a reader holding HDF5's lock failed it."""
    w = PairStoreWriter.create(tmp_path / "p.h5", rows=1, image_shape=(4, 4, 3), source={}, model="m",
                               attack={}, seed=0, class_names=None, precision="fp32", config={})
    w.write_rows(0, clean=np.zeros((1, 4, 4, 3), np.uint8), delta=np.zeros((1, 4, 4, 3), np.float16),
                 label=np.zeros(1), eps=np.ones(1), source_index=np.zeros(1), pred_clean=np.zeros(1),
                 pred_adv=np.zeros(1))
    reader = ("import sys, time; from advkit.data.store import PairStore; "
              "s = PairStore(sys.argv[1]); print('open', flush=True); time.sleep(1); s.close()")
    with _process_holding(tmp_path / "p.h5", reader):
        w.finish()
    with PairStore(tmp_path / "p.h5") as store:
        assert store.info.complete


def test_pair_dataset_in_dataloader_workers(tmp_path):
    clean, delta = _write_store(tmp_path / "s.h5")
    ds = PairDataset(tmp_path / "s.h5")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    advs, cleans = [], []
    for adv, c, label, eps in loader:
        advs.append(adv)
        cleans.append(c)
        assert adv.shape == (2, 3, 5, 7) and eps.dtype == torch.float64
    expected = reconstruct_adv(clean, delta)
    torch.testing.assert_close(torch.cat(advs), expected)
    torch.testing.assert_close(torch.cat(cleans), torch.from_numpy(clean).permute(0, 3, 1, 2).float() / 255)


def test_merge_copies_and_virtual(tmp_path):
    a = _write_store(tmp_path / "a.h5", rows=4, shard="0/2", offset=0)
    b = _write_store(tmp_path / "b.h5", rows=3, shard="1/2", offset=4)
    for virtual in (False, True):
        out = tmp_path / f"m{virtual}.h5"
        summary = merge_stores(out, [tmp_path / "b.h5", tmp_path / "a.h5"], virtual=virtual)
        assert summary["rows"] == 7
        with PairStore(out) as m:
            c, d = m.raw(slice(None))
            assert np.array_equal(c, np.concatenate([a[0], b[0]]))
            assert np.array_equal(d, np.concatenate([a[1], b[1]]))
            assert list(m.field("source_index")) == list(range(7))
    with pytest.raises(StoreFormatError, match="complete run"):
        merge_stores(tmp_path / "x.h5", [tmp_path / "a.h5"])
    assert not (tmp_path / "x.h5").exists()
    # a virtual store whose shard went missing read its rows as zeros (or another folder's file)
    (tmp_path / "b.h5").rename(tmp_path / "b_moved.h5")
    with pytest.raises(StoreFormatError, match=r"mTrue.h5 is a virtual store whose shard b.h5 is missing"):
        PairStore(tmp_path / "mTrue.h5")
    (tmp_path / "b_moved.h5").rename(tmp_path / "b.h5")
    # a shard named as the output: replaced by the merge (virtual: by a file that maps itself)
    before = (tmp_path / "a.h5").read_bytes()
    for virtual in (False, True):
        with pytest.raises(OutputError, match="a.h5 is one of the stores to merge"):
            merge_stores(tmp_path / "a.h5", [tmp_path / "a.h5", tmp_path / "b.h5"], virtual=virtual)
        assert (tmp_path / "a.h5").read_bytes() == before
    # chunks are copied compressed, as they are: a damaged one is caught by its zlib checksum
    with h5py.File(tmp_path / "b.h5", "r") as f:
        chunk = f["clean"].id.get_chunk_info(1)
    _damage(tmp_path / "b.h5", chunk.byte_offset + chunk.size // 2, 4)
    with pytest.raises(StoreFormatError, match=r"b.h5 is damaged: cannot read row 1 of 'clean'"):
        merge_stores(tmp_path / "x.h5", [tmp_path / "a.h5", tmp_path / "b.h5"])
    assert not (tmp_path / "x.h5").exists()


def test_a_file_another_process_holds_is_named_as_such(tmp_path):
    """HDF5's file lock read as "is not a readable HDF5 file (Unable to synchronously open file)"."""
    holder = ("import h5py, sys, time; f = h5py.File(sys.argv[1], 'w'); f.flush(); "
              "print('open', flush=True); time.sleep(60)")
    with _process_holding(tmp_path / "held.h5", holder):
        with pytest.raises(StoreFormatError, match="held.h5 is in use by another process"):
            PairStore(tmp_path / "held.h5")
