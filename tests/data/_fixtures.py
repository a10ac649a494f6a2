"""Helpers that build tiny fake dataset layouts and odd image files for the data tests."""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png16(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel PNG (grey, grey + alpha, RGB or RGBA) written by hand: Pillow cannot write RGB16."""
    if array.ndim == 2:
        array = array[:, :, None]
    h, w, c = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def cifar_pickle(obj: object, protocol: int) -> bytes:
    """Pickle as a CIFAR batch; protocol 2 with NumPy's old module path, like the real (Python 2) files."""
    data = pickle.dumps(obj, protocol=3 if protocol == 2 else protocol)
    if protocol == 2:
        # The official files name numpy.core.multiarray (NumPy 1 era); GLOBAL opcodes are plain text.
        data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return data


def make_cifar_batches(root: Path, n_test: int = 6, n_train: int = 2, protocol: int = 2) -> tuple[Path, dict]:
    """A ``cifar-10-batches-py`` folder with tiny batches; returns (folder, {file: (x_hwc, y)})."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    truth = {}
    names = ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
    for seed, name in enumerate(names):
        n = n_test if name == "test_batch" else n_train
        x = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = [int(v) for v in np.random.default_rng(100 + seed).integers(0, 10, n)]
        rows = x.transpose(0, 3, 1, 2).reshape(n, 3072)  # R plane, G plane, B plane
        batch = {b"batch_label": name.encode(), b"labels": y, b"data": rows,
                 b"filenames": [f"img{i}.png".encode() for i in range(n)]}  # fmt: skip
        (folder / name).write_bytes(cifar_pickle(batch, protocol))
        truth[name] = (x, np.array(y))
    meta = {b"label_names": [s.encode() for s in ["plane", "car", "bird", "cat", "deer", "dog", "frog",
                                                  "horse", "ship", "truck"]],
            b"num_cases_per_batch": n_train, b"num_vis": 3072}  # fmt: skip
    (folder / "batches.meta").write_bytes(cifar_pickle(meta, protocol))
    return folder, truth
