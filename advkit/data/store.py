"""The HDF5 pair store, format version 1 (SPEC "HDF5 pair store").

One file holds N rows; a row is (clean image, perturbation, label, eps):

- ``clean`` uint8 (N, H, W, 3) and ``delta`` float16 (N, H, W, 3), with
  ``adv = clip(clean / 255 + delta, 0, 1)``. float16 ``adv`` would be too coarse near 1.0 (step
  4.9e-4 > the smallest AdvFilter radius 1e-4); a float16 *difference* keeps the round-trip error of
  the adversarial image below 0.05 % of eps.
- ``label``, ``source_index``, ``pred_clean``, ``pred_adv`` int64 (N,) (predictions −1 where not
  computed), ``eps`` float32 (N,), ``done`` bool (N,).
- Root attributes: ``advkit_format = "pairs"``, ``format_version = 1``, ``advkit_version``,
  ``source``, ``model``, ``attack`` (JSON), ``seed``, ``class_names`` (JSON list), plus
  ``precision``, ``config`` (JSON of everything that must match on resume) and ``complete``.

Image datasets are chunked one row per chunk with gzip + shuffle, readable by any HDF5 reader.
Writers flush the pixel rows before marking them ``done`` and write in SWMR mode, so a killed
writer leaves a readable file whose ``done`` rows are all valid.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

import advkit
from advkit.errors import OutputError, StoreFormatError, UsageError

FORMAT_NAME = "pairs"
FORMAT_VERSION = 1

ROW_FIELDS: dict[str, np.dtype] = {
    "label": np.dtype(np.int64),
    "eps": np.dtype(np.float32),
    "source_index": np.dtype(np.int64),
    "pred_clean": np.dtype(np.int64),
    "pred_adv": np.dtype(np.int64),
    "done": np.dtype(np.bool_),
}
IMAGE_FIELDS: dict[str, np.dtype] = {"clean": np.dtype(np.uint8), "delta": np.dtype(np.float16)}
REQUIRED_ATTRS = (
    "advkit_format",
    "format_version",
    "advkit_version",
    "source",
    "model",
    "attack",
    "seed",
    "class_names",
)


#: File name suffixes of pair stores: outputs must carry one, so a store never hides under another name.
STORE_SUFFIXES = (".h5", ".hdf5")


def check_store_name(path: str | os.PathLike[str], option: str = "--out") -> None:
    """`UsageError` unless ``path`` ends in .h5 or .hdf5 (a store written under another name would
    pass for another kind of file) and is not a folder (found only when the finished file is renamed
    onto it, after all the work)."""
    if Path(path).suffix.lower() not in STORE_SUFFIXES:
        raise UsageError(f"{option} {path}: a pair store is an HDF5 file; name it *.h5")
    if Path(path).is_dir():
        raise UsageError(f"{option} {path} is a folder; name a file for the pair store")


def quantize_delta(delta: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """Round a perturbation to float16 without leaving the L∞ ball.

    Args:
        delta: (N, ...) float perturbation.
        eps: (N,) radii or None. Where rounding to the nearest float16 would make ``|delta|``
            exceed eps, the value is moved one float16 step toward zero instead.
    Returns: float16 tensor of the same shape.
    """
    d16 = delta.to(torch.float16)
    if eps is None:
        return d16
    bound = eps.to(torch.float32).view(-1, *([1] * (delta.ndim - 1)))
    over = d16.float().abs() > bound
    if over.any():
        toward_zero = torch.nextafter(d16, torch.zeros_like(d16))
        d16 = torch.where(over, toward_zero, d16)
    return d16


def reconstruct_adv(clean_u8: np.ndarray | torch.Tensor, delta: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``clip(clean / 255 + delta, 0, 1)`` as float32 NCHW (or CHW for one row).

    Args: clean uint8 (..., H, W, 3); delta float16 (..., H, W, 3).
    """
    clean_t = torch.as_tensor(np.asarray(clean_u8)).float().div_(255)
    delta_t = torch.as_tensor(np.asarray(delta)).float()
    adv = (clean_t + delta_t).clamp_(0, 1)
    return adv.movedim(-1, -3).contiguous()


def images_from_raw(clean_u8: np.ndarray, delta: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, adv) float32 (n, 3, H, W) in [0, 1] from a store's raw rows (`PairStore.raw`)."""
    clean = torch.from_numpy(clean_u8).float().div_(255).permute(0, 3, 1, 2).contiguous()
    return clean, reconstruct_adv(clean_u8, delta)


def _json_attr(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _load_json_attr(f: h5py.File, name: str, path: Path) -> Any:
    raw = f.attrs.get(name)
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        return json.loads(raw)
    except (TypeError, json.JSONDecodeError) as exc:
        raise StoreFormatError(f"{path}: attribute {name!r} is not valid JSON") from exc


@dataclass(frozen=True)
class StoreInfo:
    """What a store's attributes say, decoded."""

    path: Path
    rows: int
    image_shape: tuple[int, int, int]
    rows_done: int
    source: Any
    model: Any
    attack: Any
    seed: int
    class_names: list[str] | None
    precision: str
    complete: bool
    advkit_version: str
    config: Any


def _validate(f: h5py.File, path: Path) -> None:
    fmt = f.attrs.get("advkit_format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt is None:
        raise StoreFormatError(f"{path} is an HDF5 file but not an advkit store (no 'advkit_format')")
    if fmt != FORMAT_NAME:
        shown = repr(fmt) if isinstance(fmt, str) else str(getattr(fmt, "tolist", lambda: fmt)())
        raise StoreFormatError(f"{path} is an advkit {shown} store, not a pair store")
    try:
        version = int(f.attrs.get("format_version", -1))
    except (TypeError, ValueError):
        version = -1  # (a value that is no integer at all: reported as an unknown version)
    if version != FORMAT_VERSION:
        raise StoreFormatError(
            f"{path} has pair-store format version {version}; this advkit reads version {FORMAT_VERSION}"
        )
    missing = [a for a in REQUIRED_ATTRS if a not in f.attrs]
    if missing:
        raise StoreFormatError(f"{path}: missing attributes {', '.join(missing)}")
    fields = {**IMAGE_FIELDS, **ROW_FIELDS}
    for name, dtype in fields.items():
        if name not in f:
            raise StoreFormatError(f"{path}: missing dataset {name!r}")
        if f[name].dtype != dtype:
            raise StoreFormatError(f"{path}: dataset {name!r} has dtype {f[name].dtype}, expected {dtype}")
    n = f["clean"].shape[0]
    if f["clean"].ndim != 4 or f["clean"].shape[-1] != 3 or f["delta"].shape != f["clean"].shape:
        raise StoreFormatError(
            f"{path}: clean {f['clean'].shape} and delta {f['delta'].shape} must both be (N, H, W, 3)"
        )
    for name in ROW_FIELDS:
        if f[name].shape != (n,):
            raise StoreFormatError(f"{path}: dataset {name!r} has shape {f[name].shape}, expected ({n},)")


_HELD_BY_WRITER = "already open for write"
_FINISH_ATTEMPTS = 120  # (every 0.5 s)


def open_h5(path: str | os.PathLike[str], mode: str = "r", **kwargs: Any) -> h5py.File:
    """Open an HDF5 file, turning "missing" and "not HDF5 / corrupt" into one-line `StoreFormatError`s.

    A reader of a file that a gen-adv writer holds (or held when it was killed) falls back to a SWMR
    read, which HDF5 allows for such files; a plain read is tried first because a SWMR read of a
    corrupt file retries for a long time before failing.
    """
    path = Path(path)
    if mode in ("r", "r+") and not path.is_file():
        raise StoreFormatError(f"store not found: {path}")
    if mode == "r+" and path.stat().st_size == 0:
        # (HDF5 would make an empty file of it and report a store without attributes)
        raise StoreFormatError(f"{path} is empty (0 bytes), not an HDF5 file")
    try:
        return h5py.File(path, mode, **kwargs)
    except OSError as exc:
        if mode == "r" and _HELD_BY_WRITER in str(exc) and not kwargs.get("swmr"):
            return open_h5(path, mode, swmr=True, **kwargs)
        if _HELD_BY_WRITER in str(exc):
            raise
        if mode == "w":
            reason = os.strerror(exc.errno) if exc.errno else str(exc).split("(")[0].strip()
            raise OutputError(f"cannot create {path}: {reason}") from exc
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in str(exc).lower():
            # HDF5's file lock: another process has it open (a reader while we write, or the reverse)
            raise StoreFormatError(f"{path} is in use by another process (HDF5 file lock); "
                                   "retry when it has finished") from exc
        reason = str(exc).split("(")[0].strip() or "unreadable"
        raise StoreFormatError(f"{path} is not a readable HDF5 file ({reason})") from exc


def _is_held_by_writer(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and _HELD_BY_WRITER in str(exc)


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Turn HDF5's errors on reading a damaged file into one-line `StoreFormatError`s.

    A file whose header opens may still hold damaged object headers (h5py raises KeyError on a
    metadata checksum) or chunks (OSError from a failing decompression filter); these surface only
    when the damaged part is read.
    """
    try:
        yield
    except (OSError, KeyError, RuntimeError) as exc:
        if _is_held_by_writer(exc):
            raise
        reason = " ".join(str(exc).strip("'\" ").split()) or type(exc).__name__
        raise StoreFormatError(f"{path} is damaged: cannot read {what} ({reason})") from exc


def _check_virtual_sources(f: h5py.File, path: Path) -> None:
    """A virtual (``store merge --virtual``) store whose shard files are missing: HDF5 reads the
    missing rows as zeros, or a file of the same name under the current folder, without a word."""
    for name in ("clean", "delta", "done"):
        dataset = f[name]
        if not dataset.is_virtual:
            continue
        for source in {m.file_name for m in dataset.virtual_sources()}:
            if source == ".":  # (the store itself)
                continue
            where = Path(source) if os.path.isabs(source) else path.parent / source
            if not where.is_file():
                raise StoreFormatError(f"{path} is a virtual store whose shard {source} is missing "
                                       f"(expected at {where}); keep the shards beside it or merge without --virtual")


class PairStore:
    """Read-only access to a pair store (validated on open).

    >>> store = PairStore("pairs.h5")
    >>> clean, adv = store.images(slice(0, 8))   # float32 (8, 3, H, W) each, in [0, 1]
    """

    def __init__(self, path: str | os.PathLike[str], *, require_complete: bool = False) -> None:
        self.path = Path(path)
        self._file = open_h5(self.path, "r")
        try:
            with reading(self.path, "its layout"):
                _validate(self._file, self.path)
                _check_virtual_sources(self._file, self.path)
                self.info = self._read_info()
        except BaseException:
            self._file.close()
            raise
        if require_complete and self.info.rows_done < self.info.rows:
            self._file.close()
            raise StoreFormatError(
                f"{self.path} is incomplete: {self.info.rows_done} of {self.info.rows} rows done "
                "(finish it with gen-adv --resume)"
            )

    def _read_info(self) -> StoreInfo:
        f = self._file
        names = _load_json_attr(f, "class_names", self.path)
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise StoreFormatError(f"{self.path}: attribute 'class_names' is not a list of names")
        attack = _load_json_attr(f, "attack", self.path)
        source = _load_json_attr(f, "source", self.path)
        model = f.attrs["model"]
        model = model.decode() if isinstance(model, bytes) else str(model)
        config = _load_json_attr(f, "config", self.path) if "config" in f.attrs else None
        seed = f.attrs["seed"]
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)):
            raise StoreFormatError(f"{self.path}: attribute 'seed' is {seed!s}, not an integer")
        return StoreInfo(
            path=self.path,
            rows=int(f["clean"].shape[0]),
            image_shape=tuple(int(s) for s in f["clean"].shape[1:]),  # type: ignore[arg-type]
            rows_done=(rows_done := int(np.count_nonzero(f["done"][...]))),
            source=source,
            model=model,
            attack=attack,
            seed=int(seed),
            class_names=names,
            precision=str(f.attrs.get("precision", "fp32")),
            # marked complete by the writer and every row done (a mark alone survives edits and copies)
            complete=bool(f.attrs.get("complete", False)) and rows_done == int(f["clean"].shape[0]),
            advkit_version=str(f.attrs["advkit_version"]),
            config=config,
        )

    def __len__(self) -> int:
        return self.info.rows

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PairStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def field(self, name: str) -> np.ndarray:
        """A whole per-row field (``label``, ``eps``, ``pred_adv``, ...) as a NumPy array."""
        if name not in ROW_FIELDS:
            raise KeyError(f"unknown row field {name!r}; fields: {', '.join(ROW_FIELDS)}")
        with reading(self.path, f"field {name!r}"):
            return self._file[name][...]

    def raw(self, rows: slice | Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(clean uint8 (n, H, W, 3), delta float16 (n, H, W, 3)) for the given rows.

        Raises `StoreFormatError` for a row whose delta is NaN or infinite, or (stores of an L∞
        attack) outside its radius: numbers computed from such rows would be wrong without a word.
        """
        rows = _as_h5_index(rows)
        clean, delta = self._read_rows(rows)
        flat = delta.reshape(len(delta), int(np.prod(delta.shape[1:])))  # (also for no rows)
        eps = None
        if self.linf_bounded:
            with reading(self.path, "field 'eps'"):
                eps = self._file["eps"][rows]
        # (in blocks of rows: train-denoiser reads a whole store at once, and a full-size temporary
        # would double its memory)
        non_finite, outside = np.zeros(len(flat), bool), np.zeros(len(flat), bool)
        for i in range(0, len(flat), 1024):
            block = np.abs(flat[i : i + 1024])
            peak = block.max(1) if block.shape[1] else np.zeros(len(block), block.dtype)
            non_finite[i : i + 1024] = ~np.isfinite(peak)  # (a NaN or inf anywhere makes the max one)
            if eps is not None:
                outside[i : i + 1024] = peak > eps[i : i + 1024]
        bad, what = non_finite, "a NaN or infinite perturbation"
        if not bad.any():
            bad, what = outside, "a perturbation outside its eps ball"
        if bad.any():
            first = int(np.arange(self.info.rows)[rows][np.argmax(bad)])
            raise StoreFormatError(f"{self.path}: row {first} holds {what} ({int(bad.sum())} of these "
                                   f"{len(bad)} rows); `advkit store verify` lists every bad row")
        return clean, delta

    def _read_rows(self, rows: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with reading(self.path, f"rows {_describe_rows(rows)}"):
            return self._file["clean"][rows], self._file["delta"][rows]

    @property
    def linf_bounded(self) -> bool:
        """Whether every row's delta lies in its L∞ ball of radius ``eps`` (gen-adv's stores of an L∞
        attack; a defended store (defend) and attack-denoise's hold deltas that no radius bounds, and
        noise pairs hold sigma as their radius)."""
        attack = self.info.attack if isinstance(self.info.attack, dict) else {}
        return (attack.get("norm") == "linf" and attack.get("name") != "noise"
                and "defense" not in self._file.attrs and "clean_is" not in self._file.attrs)

    def images(self, rows: slice | Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(clean, adv) float32 (n, 3, H, W) in [0, 1] for the given rows."""
        return images_from_raw(*self.raw(rows))

    def verify(
        self,
        *,
        classifier: torch.nn.Module | None = None,
        batch_rows: int = 1024,
        device: torch.device | str = "cpu",
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Read every row and check what the format promises of the done ones.

        Opening a store reads only its layout; a damaged chunk surfaces when its rows are read, so
        this reads them all (chunk by chunk where a batch fails, to name each damaged row). Checks:
        ``unreadable`` (a chunk that does not decompress), ``non_finite`` (a NaN or inf in delta),
        ``outside_ball`` (‖delta‖∞ > eps, for stores of an L∞ attack: the writer rounds every delta
        into its ball, so this holds exactly), ``outside_range`` (clean/255 + delta off [0, 1] by
        more than float16 rounding), ``bad_eps`` (eps not finite and > 0), ``bad_label`` and
        ``bad_prediction`` (outside [-1, classes)). With ``classifier`` (the store's model), also
        ``prediction_mismatch``: rows whose stored image the model (strict fp32) does not assign
        the stored ``pred_adv``.

        Returns {"path", "rows", "rows_done", "complete", "checked": [...], "problems": {check:
        {"rows": count, "first": [up to 10 rows]}}, "ok": bool}.
        """
        n = self.info.rows
        done = self.field("done")
        label, eps = self.field("label"), self.field("eps")
        pred_clean, pred_adv = self.field("pred_clean"), self.field("pred_adv")
        bounded = self.linf_bounded
        classes = len(self.info.class_names) if self.info.class_names else None
        found: dict[str, list[int]] = {}

        def flag(check: str, rows: np.ndarray) -> None:
            if rows.size:
                found.setdefault(check, []).extend(int(r) for r in rows)

        good_eps = np.isfinite(eps) & (eps > 0)
        flag("bad_eps", np.flatnonzero(done & ~good_eps))
        if classes is not None:
            flag("bad_label", np.flatnonzero(done & ((label < -1) | (label >= classes))))
            flag("bad_prediction", np.flatnonzero(done & ((pred_clean < -1) | (pred_clean >= classes)
                                                         | (pred_adv < -1) | (pred_adv >= classes))))
        if classifier is not None:
            from advkit.models.classifier import strict_fp32_predictions

            classifier = classifier.to(device).eval()
        for start in range(0, n, batch_rows):
            stop = min(start + batch_rows, n)
            readable, clean_u8, delta16, unreadable = self._salvage_rows(start, stop)
            flag("unreadable", np.asarray(unreadable, dtype=np.int64))
            keep = done[readable]
            rows, clean_u8, delta16 = readable[keep], clean_u8[keep], delta16[keep]
            if rows.size:
                flat = delta16.reshape(len(rows), -1).astype(np.float32)
                finite = np.isfinite(flat).all(1)
                flag("non_finite", rows[~finite])
                if bounded:
                    flag("outside_ball", rows[finite & good_eps[rows] & (np.abs(flat).max(1) > eps[rows])])
                adv = clean_u8.reshape(len(rows), -1).astype(np.float32) / 255 + flat
                slack = 1e-3  # float16 rounding of a delta of up to 1: 2⁻¹¹
                flag("outside_range", rows[finite & ((adv.min(1) < -slack) | (adv.max(1) > 1 + slack))])
                if classifier is not None:
                    images = reconstruct_adv(clean_u8, delta16).to(device)
                    pred = strict_fp32_predictions(classifier, images).cpu().numpy()
                    stored = pred_adv[rows]
                    flag("prediction_mismatch", rows[(stored >= 0) & (pred != stored)])
            if on_progress is not None:
                on_progress(stop, n)
        checked = ["unreadable", "non_finite", *(["outside_ball"] if bounded else []), "outside_range", "bad_eps",
                   *(["bad_label", "bad_prediction"] if classes is not None else []),
                   *(["prediction_mismatch"] if classifier is not None else [])]
        problems = {check: {"rows": len(set(rows)), "first": sorted(set(rows))[:10]} for check, rows in found.items()}
        return {"path": str(self.path), "rows": n, "rows_done": int(done.sum()), "complete": self.info.complete,
                "checked": checked, "problems": problems, "ok": not problems}

    def _salvage_rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """Rows ``start .. stop`` as (row indices read, clean, delta, rows that could not be read):
        the whole range at once, or row by row where that fails, so a damaged chunk costs its own
        row only."""
        try:
            clean, delta = self._read_rows(slice(start, stop))
            return np.arange(start, stop), clean, delta, []
        except StoreFormatError:
            pass
        read, cleans, deltas, unreadable = [], [], [], []
        for row in range(start, stop):
            try:
                cleans.append(self._file["clean"][row])
                deltas.append(self._file["delta"][row])
                read.append(row)
            except (OSError, KeyError, RuntimeError):
                del cleans[len(read):]
                unreadable.append(row)
        tail = self._file["clean"].shape[1:]
        return (np.asarray(read, dtype=np.int64), np.stack(cleans) if read else np.empty((0, *tail), np.uint8),
                np.stack(deltas) if read else np.empty((0, *tail), np.float16), unreadable)

    def eps_grid(self) -> list[float]:
        """The distinct radii in the store, ascending."""
        # float32 radii read back as e.g. 0.0010000000474974513; 7 significant digits is exact for float32
        return sorted({float(f"{float(e):.7g}") for e in np.unique(self.field("eps"))})

    def summary(self) -> dict[str, Any]:
        """Shape, radii, provenance and accuracy before/after from the stored predictions."""
        info = self.info
        done = self.field("done")
        label = self.field("label")
        eps = self.field("eps")
        pred_clean = self.field("pred_clean")
        pred_adv = self.field("pred_adv")
        per_eps = []
        for e in self.eps_grid():
            sel = done & (eps == np.float32(e))  # e round-trips to the same float32
            row: dict[str, Any] = {"eps": e, "rows": int(sel.sum())}
            lab = sel & (label >= 0)
            if lab.any() and (pred_clean[lab] >= 0).all():
                row["acc_clean"] = float((pred_clean[lab] == label[lab]).mean())
            if lab.any() and (pred_adv[lab] >= 0).all():
                row["acc_adv"] = float((pred_adv[lab] == label[lab]).mean())
            if sel.any() and (pred_adv[sel] >= 0).all() and (pred_clean[sel] >= 0).all():
                row["changed"] = float((pred_adv[sel] != pred_clean[sel]).mean())
            per_eps.append(row)
        return {
            "path": str(info.path),
            "rows": info.rows,
            "rows_done": int(done.sum()),
            "complete": info.complete,
            "image_shape": list(info.image_shape),
            "eps_grid": self.eps_grid(),
            "model": info.model,
            "attack": info.attack,
            "source": info.source,
            "seed": info.seed,
            "precision": info.precision,
            "classes": len(info.class_names) if info.class_names else None,
            "advkit_version": info.advkit_version,
            "per_eps": per_eps,
        }


def _check_deflated(chunk: bytes, path: Path, what: str) -> None:
    try:
        zlib.decompress(chunk)
    except zlib.error as exc:
        raise StoreFormatError(f"{path} is damaged: cannot read {what} ({exc})") from exc


def _describe_rows(rows: slice | np.ndarray) -> str:
    if isinstance(rows, slice):
        return f"{rows.start or 0}..{'end' if rows.stop is None else rows.stop - 1}"
    return f"{rows[0]}..{rows[-1]}" if len(rows) else "(none)"


def _as_h5_index(rows: slice | Sequence[int] | np.ndarray) -> slice | np.ndarray:
    if isinstance(rows, slice):
        return rows
    arr = np.asarray(rows, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"row indices must be 1-D, got shape {arr.shape}")
    if arr.size and np.any(np.diff(arr) <= 0):
        raise ValueError("row indices must be strictly increasing (h5py fancy indexing)")
    return arr


#: Room kept free beyond the rows' own estimate when writing a store (HDF5 metadata, chunk index).
_SPACE_MARGIN = 1 << 18


def _free_bytes(path: Path) -> int:
    """Free bytes on the device that holds (or will hold) ``path``."""
    folder = path.resolve().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _require_space(path: Path, need: int, what: str) -> None:
    """`OutputError` unless the device that holds (or will hold) ``path`` has ``need`` bytes free."""
    free = _free_bytes(path)
    if free < need:
        raise OutputError(f"no space left in {path.resolve().parent}: {_megabytes(free)} free, about "
                          f"{_megabytes(need)} needed {what}")


class PairStoreWriter:
    """Create or resume a pair store and write rows into it.

    ``config`` is the JSON-able description of everything that determines the rows (source,
    selection, model, attack, radii, seed, precision); resuming with a different config is refused.
    """

    def __init__(self, path: Path, f: h5py.File) -> None:
        self.path = path
        self._file = f
        self.rows = int(f["clean"].shape[0])
        image_shape = f["clean"].shape[1:]
        # a row's pixels uncompressed (uint8 clean + float16 delta) and its row fields: the
        # estimate until rows written in this file give a measured one
        self._row_bytes_bound = 3 * int(np.prod(image_shape)) + 64

    def _check_space(self, n: int) -> None:
        """`OutputError` unless the file's device has room for ``n`` more rows (1.5 times their
        estimated size, plus a margin for HDF5's metadata).

        HDF5 does not report a full disk reliably: writes into its chunk cache "succeed", the
        failures surface only as ignored errors when objects are freed, rows get marked done
        without their pixels, and the process can crash at exit. So the writer stops before the
        disk fills, leaving a consistent partial store that a later run can resume."""
        done = int(np.count_nonzero(self._file["done"][...]))
        size = self.path.stat().st_size
        per_row = size / done if done else self._row_bytes_bound
        need = int(1.5 * n * per_row) + _SPACE_MARGIN
        _require_space(self.path, need, f"for the next {n} rows of the store; free some space and run again"
                       + (f" (gen-adv --resume keeps the {done} rows written)" if done else ""))

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        rows: int,
        image_shape: tuple[int, int, int],
        source: Any,
        model: str,
        attack: Any,
        seed: int,
        class_names: Sequence[str] | None,
        precision: str,
        config: Any,
        extra_attrs: dict[str, Any] | None = None,
    ) -> PairStoreWriter:
        path = Path(path)
        if len(image_shape) != 3 or image_shape[2] != 3:
            raise ValueError(f"image_shape must be (H, W, 3), got {image_shape}")
        f = open_h5(path, "w", libver="latest")
        try:
            chunk = (1, *image_shape)
            for name, dtype in IMAGE_FIELDS.items():
                f.create_dataset(
                    name,
                    shape=(rows, *image_shape),
                    dtype=dtype,
                    chunks=chunk if rows else None,
                    compression="gzip" if rows else None,
                    compression_opts=4 if rows else None,
                    shuffle=bool(rows),
                )
            row_chunk = (max(1, min(rows, 1 << 14)),)
            for name, dtype in ROW_FIELDS.items():
                fill = -1 if name.startswith("pred") else 0
                f.create_dataset(
                    name, shape=(rows,), dtype=dtype, chunks=row_chunk if rows else None, fillvalue=fill
                )
            f.attrs["advkit_format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["advkit_version"] = advkit.__version__
            f.attrs["source"] = _json_attr(source)
            f.attrs["model"] = model
            f.attrs["attack"] = _json_attr(attack)
            f.attrs["seed"] = int(seed)
            f.attrs["class_names"] = _json_attr(list(class_names) if class_names is not None else None)
            f.attrs["precision"] = precision
            f.attrs["config"] = _json_attr(config)
            f.attrs["complete"] = False
            for key, value in (extra_attrs or {}).items():
                f.attrs[key] = value if isinstance(value, (int, float, str, bool)) else _json_attr(value)
            f.flush()
            # SWMR orders metadata writes so that a killed writer leaves a consistent file.
            f.swmr_mode = True
        except BaseException:
            f.close()
            raise
        return cls(path, f)

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike[str],
        config: Any,
        *,
        rows: int | None = None,
        image_shape: tuple[int, int, int] | None = None,
    ) -> PairStoreWriter:
        """Reopen a partial store for writing; refuse if it was made with a different config or
        holds another number of rows or another image size than ``rows`` / ``image_shape``.

        A writer killed with SIGKILL leaves HDF5's "open for write" mark in the file, which blocks a
        plain reopen; the file is then checked through a SWMR read and its done rows are recovered
        into a fresh file.
        """
        path = Path(path)
        try:
            f = open_h5(path, "r+", libver="latest")
        except OSError as exc:
            if not _is_held_by_writer(exc):
                raise
            _recover_killed_store(path, lambda killed: _check_resumable(killed, path, config, rows, image_shape))
            f = open_h5(path, "r+", libver="latest")
        try:
            with reading(path, "its layout"):
                _check_resumable(f, path, config, rows, image_shape)
            f.swmr_mode = True
        except BaseException:
            f.close()
            raise
        return cls(path, f)

    def done_mask(self) -> np.ndarray:
        return self._file["done"][...]

    def write_rows(
        self,
        start: int,
        *,
        clean: np.ndarray,
        delta: np.ndarray,
        label: np.ndarray,
        eps: np.ndarray,
        source_index: np.ndarray,
        pred_clean: np.ndarray,
        pred_adv: np.ndarray,
    ) -> None:
        """Write rows ``start .. start+n`` and mark them done after their pixels are flushed."""
        n = len(clean)
        if start < 0 or start + n > self.rows:
            raise ValueError(f"rows {start}..{start + n} out of range for a store of {self.rows} rows")
        self._check_space(n)
        sl = slice(start, start + n)
        f = self._file
        f["clean"][sl] = clean
        f["delta"][sl] = delta
        f["label"][sl] = label
        f["eps"][sl] = eps
        f["source_index"][sl] = source_index
        f["pred_clean"][sl] = pred_clean
        f["pred_adv"][sl] = pred_adv
        f.flush()
        f["done"][sl] = True
        f.flush()

    def finish(self) -> None:
        """Mark the store complete (all rows done) and close it."""
        done = self.done_mask()
        path = self.path
        self._file.close()
        if not done.all():
            raise StoreFormatError(f"{path}: {int((~done).sum())} rows are not done")
        # SWMR files cannot take new attribute values; reopen plainly to stamp completion. A reader
        # (store info on the partial) holds HDF5's lock for a moment: wait up to a minute for it.
        for attempt in range(_FINISH_ATTEMPTS):
            try:
                f = open_h5(path, "r+")
                break
            except StoreFormatError as exc:
                if "in use by another process" not in str(exc) or attempt == _FINISH_ATTEMPTS - 1:
                    raise
                time.sleep(0.5)
        with f:
            f.attrs["complete"] = True

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()


def _check_resumable(
    f: h5py.File, path: Path, config: Any, rows: int | None, image_shape: tuple[int, int, int] | None
) -> None:
    """`StoreFormatError` unless ``f`` is a pair store started with ``config``, of ``rows`` rows of
    ``image_shape`` images (a partial from elsewhere or edited would otherwise be finished and
    called complete)."""
    _validate(f, path)
    stored = _load_json_attr(f, "config", path) if "config" in f.attrs else None
    wanted = json.loads(_json_attr(config))
    if stored != wanted:
        raise StoreFormatError(f"{path} was started with different arguments ({config_difference(stored, wanted)}); "
                               "rerun with the same arguments or use --overwrite")
    held = tuple(int(s) for s in f["clean"].shape)
    expected = (rows if rows is not None else held[0], *(image_shape or held[1:]))
    if held != expected:
        raise StoreFormatError(f"{path} holds {held[0]} rows of {held[1]}x{held[2]} images, but this run makes "
                               f"{expected[0]} rows of {expected[1]}x{expected[2]}; it is not this run's "
                               "unfinished store: use --overwrite")


def _recover_killed_store(path: Path, check: Callable[[h5py.File], None]) -> None:
    """Copy the done rows of a store whose writer was killed into a clean file at the same path,
    once ``check`` (given the file, read through SWMR) has passed: a file refused is left as it is.

    SWMR writes keep the file consistent for readers at every instant, and rows are marked done
    only after their pixels were flushed, so every done row read back here is complete.
    """
    from advkit.utils import atomic_path

    try:
        src = h5py.File(path, "r", swmr=True)
    except OSError as exc:
        raise StoreFormatError(f"{path}: the unfinished store cannot be recovered; use --overwrite") from exc
    with src:
        with reading(path, "its layout"):
            check(src)
        with atomic_path(path, suffix=".recover") as tmp, reading(path, "the rows of the unfinished run"):
            _copy_done_rows(src, tmp)


def _copy_done_rows(src: h5py.File, tmp: Path) -> None:
    """Write ``src``'s attributes and done rows (other rows: fill values) into a new file ``tmp``."""
    done = src["done"][...]
    with h5py.File(tmp, "w", libver="latest") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            sds = src[name]
            dds = dst.create_dataset(
                name,
                shape=sds.shape,
                dtype=sds.dtype,
                chunks=sds.chunks,
                compression=sds.compression,
                compression_opts=sds.compression_opts,
                shuffle=sds.shuffle,
                fillvalue=sds.fillvalue,
            )
            if name in IMAGE_FIELDS:
                for r in np.flatnonzero(done):
                    dds[r] = sds[r]
            else:
                dds[...] = np.where(done, sds[...], sds.fillvalue) if name != "done" else done


def config_difference(a: Any, b: Any, prefix: str = "") -> str:
    """The first key (dotted path) where two run configs differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return config_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.') or 'config'}: stored {a!r}, now {b!r}"


def same_radius(stored: np.ndarray | float, requested: float) -> np.ndarray:
    """Whether stored float32 radii are the requested radius: equal to a relative 1e-5 (float32
    rounding, and the 6 digits ``store info`` prints)."""
    return np.isclose(np.float32(stored), np.float32(requested), rtol=1e-5, atol=0)


def radius_mask(stored: np.ndarray, requested: Sequence[float], path: str | os.PathLike[str]) -> np.ndarray:
    """(N,) bool: the rows of ``stored`` (N,) radii that are one of ``requested`` (`same_radius`);
    a requested radius the store does not hold is a `UsageError` naming its radii, not a silent
    drop."""
    stored32 = np.asarray(stored, dtype=np.float32)
    grid = np.unique(stored32)
    mask = np.zeros(stored32.shape, dtype=bool)
    for radius in requested:
        hits = same_radius(grid, radius)
        if not hits.any():
            have = ", ".join(f"{v:g}" for v in grid.tolist())
            raise UsageError(f"{path} holds no rows at eps {radius:g} (its radii: {have})")
        mask |= np.isin(stored32, grid[hits])
    return mask


class PairDataset(torch.utils.data.Dataset):
    """A torch ``Dataset`` over a pair store's done rows: item = (adv, clean, label, eps).

    adv and clean are float32 (3, H, W) in [0, 1]. The HDF5 file is opened lazily in each
    DataLoader worker (h5py handles must not cross ``fork``).

    Args:
        path: the store. ``eps``: keep only rows with these radii (None: all).
        rows: explicit row indices (overrides ``eps``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        eps: Sequence[float] | None = None,
        rows: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.path = Path(path)
        with PairStore(self.path) as store:
            self.info = store.info
            done = store.field("done")
            if rows is not None:
                idx = np.asarray(rows, dtype=np.int64)
            else:
                keep = done.copy()
                if eps is not None:
                    keep &= radius_mask(store.field("eps"), eps, self.path)
                idx = np.flatnonzero(keep)
            self.rows = idx
            self.labels = store.field("label")[idx]
            self.eps = store.field("eps")[idx]
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = open_h5(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        row = int(self.rows[i])
        f = self._h5()
        with reading(self.path, f"row {row}"):
            clean_u8 = f["clean"][row]
            delta = f["delta"][row]
        clean = torch.from_numpy(clean_u8).float().div_(255).permute(2, 0, 1).contiguous()
        adv = reconstruct_adv(clean_u8, delta)
        return adv, clean, int(self.labels[i]), float(self.eps[i])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state


def merge_stores(
    out: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]], *, virtual: bool = False
) -> dict[str, Any]:
    """Join the complete shards ``i/n`` of one gen-adv run into a single store at ``out``.

    With ``virtual=False`` the compressed image chunks are copied as they are (read and written
    once, never decompressed); with ``virtual=True`` ``out`` is an HDF5 virtual dataset that maps
    the shards' rows in place (the shard files must stay beside it). The output is written to a
    temporary file and renamed, so ``out`` never names a half-merged file.
    """
    from advkit.utils import atomic_path

    out = Path(out)
    if not inputs:
        raise StoreFormatError("nothing to merge: no input stores given")
    for p in inputs:
        # The merged file replaces ``out`` by rename: a shard named as the output would be lost (and
        # a virtual output would map itself).
        if out.exists() and Path(p).exists() and os.path.samefile(out, p):
            raise OutputError(f"{out} is one of the stores to merge; name another output")
    shards = []
    for p in inputs:
        with PairStore(p, require_complete=True) as s:
            with open_h5(p, "r") as f:
                shard = str(f.attrs.get("shard", "0/1"))
                offset = int(f.attrs.get("row_offset", 0))
            shards.append((tuple(int(v) for v in shard.split("/")), offset, Path(p), s.info))
    shards.sort(key=lambda t: t[0][0])
    n = shards[0][0][1]
    got = [s[0] for s in shards]
    if got != [(i, n) for i in range(n)]:
        raise StoreFormatError(
            f"shards do not form one complete run: got {', '.join(f'{i}/{k}' for i, k in got)}, "
            f"need 0/{n} .. {n - 1}/{n} once each"
        )

    def common(info: StoreInfo) -> Any:
        cfg = dict(info.config or {})
        cfg.pop("shard", None)
        return (cfg, info.image_shape, info.model, info.attack, info.seed, info.class_names, info.precision)

    first = shards[0][3]
    for (idx, _), _, path, info in shards[1:]:
        if common(info) != common(first):
            raise StoreFormatError(f"{path} (shard {idx}/{n}) comes from a different run than {shards[0][2]}")
    offsets = [s[1] for s in shards]
    sizes = [s[3].rows for s in shards]
    if offsets != [sum(sizes[:k]) for k in range(n)]:
        raise StoreFormatError(f"shard row offsets {offsets} are not contiguous for sizes {sizes}")
    total = sum(sizes)
    config = dict(first.config or {})
    config["shard"] = [0, 1]

    if not virtual:  # (see PairStoreWriter._check_space: HDF5 does not report a full disk reliably)
        need = int(sum(s[2].stat().st_size for s in shards) * 1.05) + _SPACE_MARGIN
        _require_space(out, need, f"for {out.name} (the shards' size)")
    with atomic_path(out, suffix=".h5.tmp") as tmp:
        with open_h5(tmp, "w", libver="latest") as dst:
            with open_h5(shards[0][2], "r") as f0:
                for key, value in f0.attrs.items():
                    dst.attrs[key] = value
                layouts = {name: (f0[name].dtype, f0[name].shape[1:], f0[name].chunks) for name in f0}
            dst.attrs["config"] = _json_attr(config)
            dst.attrs["shard"] = "0/1"
            dst.attrs["row_offset"] = 0
            dst.attrs["merged_from"] = _json_attr([s[2].name for s in shards])
            if virtual:
                for name, (dtype, tail, _) in layouts.items():
                    layout = h5py.VirtualLayout(shape=(total, *tail), dtype=dtype)
                    for (_, _), offset, path, info in shards:
                        rel = os.path.relpath(path.resolve(), out.resolve().parent)
                        layout[offset : offset + info.rows] = h5py.VirtualSource(rel, name, shape=(info.rows, *tail))
                    dst.create_virtual_dataset(name, layout)
            else:
                for name, (dtype, tail, chunks) in layouts.items():
                    image = name in IMAGE_FIELDS
                    ds = dst.create_dataset(
                        name,
                        shape=(total, *tail),
                        dtype=dtype,
                        chunks=(1, *tail) if image else (max(1, min(total, 1 << 14)),),
                        compression="gzip" if image else None,
                        compression_opts=4 if image else None,
                        shuffle=image,
                    )
                    for (_, _), offset, path, info in shards:
                        with open_h5(path, "r") as src:
                            sds = src[name]
                            if image and sds.chunks == (1, *tail) and sds.compression == "gzip" and sds.shuffle:
                                # compressed chunks copied as they are (no recompression); the
                                # zlib stream's checksum still catches a damaged one
                                for r in range(info.rows):
                                    with reading(path, f"row {r} of {name!r}"):
                                        filter_mask, chunk = sds.id.read_direct_chunk((r, 0, 0, 0))
                                    if filter_mask == 0:
                                        _check_deflated(chunk, path, f"row {r} of {name!r}")
                                    ds.id.write_direct_chunk((offset + r, 0, 0, 0), chunk, filter_mask)
                            else:
                                with reading(path, repr(name)):
                                    ds[offset : offset + info.rows] = sds[...]
    with PairStore(out) as merged:
        return merged.summary()
