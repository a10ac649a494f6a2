"""Dataset sources: every image collection advkit reads, behind one interface.

``open_source(spec, image_size=...)`` recognises the layout from ``spec``:

=============================  ==========================================================
spec                           layout
=============================  ==========================================================
``sample``                     scikit-image's own example photographs (astronaut, chelsea,
                               coffee, rocket, ...), read from the installed ``skimage``
                               package; no labels. Runs offline with no data.
``file.npz``                   ``x`` uint8 (N, H, W, 3) RGB and ``y`` int (N,), as the
                               CIFAR-10 files in ``shared/data`` (``np.load`` with
                               ``allow_pickle=False``).
``DIR/cifar-10-batches-py``    torchvision's CIFAR-10 python folder (or a folder holding
[``:train`` | ``:test``]       it); ``test`` (``test_batch``, the default) or ``train``
                               (``data_batch_1..5``).
``DIR`` or ``test_32x32.mat``  torchvision's SVHN ``{split}_32x32.mat`` (scipy); label 10
[``:train``|``:test``|         (digit 0) becomes 0.
``:extra``]
``DIR`` with ``images.csv``    NeurIPS-2017 adversarial competition dev set: PNGs in
                               ``DIR/images/`` (or ``DIR``) named ``<ImageId>.png``;
                               ``TrueLabel``/``TargetClass`` are 1-indexed in the CSV and
                               become 0-indexed torchvision ImageNet indices.
``DIR``                        any folder of images, recursive, sorted by relative path.
                               Labels from ``DIR/labels.csv`` (``filename,label``; integer
                               labels, or class names mapped to their sorted order), else
                               from class sub-folders as torchvision's ImageFolder does,
                               else unknown (-1).
``image.png``                  a single image file.
=============================  ==========================================================

Size policy: with ``image_size=(H, W)`` every image is resized and center-cropped to it the
ImageNet way (`advkit.data.images.resize_center_crop`: the short side to round(S·256/224),
then the central S×S; images already of that size are untouched). Without it, images keep
their own size and ``load`` raises `DataSourceError` if one batch mixes sizes.

CIFAR-10 python batches are pickles. They are read with an unpickler that resolves only the
handful of NumPy names an array needs (no other class or function can be created), and the
result is checked to be a dict of plain arrays, lists and strings before use.
"""

from __future__ import annotations

import abc
import csv
import hashlib
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from advkit.data.images import IMAGE_EXTENSIONS, from_uint8_hwc, read_image_uint8, resize_center_crop
from advkit.errors import DataSourceError, UsageError
from advkit.utils import sha256_file, split_list

__all__ = [
    "CIFAR10_CLASSES",
    "SAMPLE_IMAGES",
    "ArraySource",
    "CifarBatchesSource",
    "ImageFilesSource",
    "ImageSource",
    "NeurIPSDevSource",
    "NpzSource",
    "SampleSource",
    "SvhnMatSource",
    "iter_batches",
    "open_source",
    "resolve_classes",
    "select_indices",
]

# CIFAR-10's label order (index = label); the CIFAR classifiers of the model zoo share it.
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

SVHN_CLASSES = [str(d) for d in range(10)]

#: The colour photographs of scikit-image's data folder that make up the ``sample`` source.
SAMPLE_IMAGES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
)

_LAYOUTS = (
    "'sample', a .npz with x/y arrays, a cifar-10-batches-py folder, an SVHN *_32x32.mat, "
    "a NeurIPS-2017 dev folder (images.csv), a folder of images, or an image file"
)
_SPLITS = ("train", "test", "extra")


class ImageSource(abc.ABC):
    """A fixed, ordered collection of RGB images with (possibly unknown) integer labels.

    Attributes:
        name: short human description, e.g. ``"CIFAR-10 test (cifar10_test.npz)"``.
        class_names: the names of label indices, or None when the source has none.
        image_size: (H, W) every loaded image is resized/cropped to, or None (native sizes).
    """

    kind: ClassVar[str] = "abstract"

    def __init__(
        self, *, name: str, class_names: Sequence[str] | None, image_size: tuple[int, int] | None
    ) -> None:
        self.name = name
        self.class_names: list[str] | None = list(class_names) if class_names is not None else None
        self.image_size = image_size

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def labels(self) -> np.ndarray:
        """int64 (N,) class indices, -1 where unknown."""

    @abc.abstractmethod
    def _read(self, indices: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Images at ``indices`` at their native size: an (n, H, W, 3) array or n (H, W, 3) arrays."""

    @abc.abstractmethod
    def _describe(self) -> dict[str, Any]:
        """The layout-specific part of `describe`."""

    def keys(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """Human-readable names of the images at ``indices`` (file paths, or ``source[i]``)."""
        return [f"{self.name}[{int(i)}]" for i in self._check_indices(indices)]

    def load(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Images at ``indices`` as uint8 (n, H, W, 3) RGB, after the size policy.

        Raises:
            IndexError: an index outside [0, len).
            DataSourceError: no ``image_size`` and the requested images differ in size.
            ImageReadError: an image file that cannot be read.
        """
        idx = self._check_indices(indices)
        images = self._read(idx)
        return self._apply_size(images, idx)

    def load_tensor(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Images at ``indices`` as float32 (n, 3, H, W) in [0, 1]."""
        return from_uint8_hwc(self.load(indices))

    def describe(self) -> dict[str, Any]:
        """A JSON-able record of what this source is, for stores and results.

        Always has ``kind``, ``spec`` (a string `open_source` reopens), ``num_images``,
        ``image_size`` ([H, W] or None) and ``class_names``; plus a fingerprint of the data
        (``sha256`` of a file, or ``listing_sha256`` over a folder's relative paths and sizes).
        """
        record: dict[str, Any] = {"kind": self.kind}
        record.update(self._describe())
        record["num_images"] = len(self)
        record["image_size"] = list(self.image_size) if self.image_size is not None else None
        record["class_names"] = self.class_names
        return record

    def __repr__(self) -> str:
        size = "native size" if self.image_size is None else f"{self.image_size[0]}×{self.image_size[1]}"
        return f"<{type(self).__name__} {self.name!r}: {len(self)} images, {size}>"

    def _check_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"{self.name}: indices must be a 1-D sequence of integers, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64)
        n = len(self)
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise IndexError(f"{self.name}: index {int(bad[0])} is outside 0..{n - 1}")
        return idx

    def _apply_size(self, images: np.ndarray | list[np.ndarray], idx: np.ndarray) -> np.ndarray:
        if self.image_size is not None:
            if isinstance(images, np.ndarray) and images.shape[1:3] == tuple(self.image_size):
                return images
            h, w = self.image_size
            if len(images) == 0:
                return np.zeros((0, h, w, 3), dtype=np.uint8)
            return np.stack([resize_center_crop(im, self.image_size) for im in images])
        if isinstance(images, np.ndarray):
            return images
        if len(images) == 0:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8)
        first = images[0].shape
        for pos, im in enumerate(images):
            if im.shape != first:
                a, b = self.keys([idx[0], idx[pos]])
                raise DataSourceError(
                    f"{self.name}: images differ in size ({a} is {first[0]}×{first[1]}, "
                    f"{b} is {im.shape[0]}×{im.shape[1]}); give an image size "
                    "(image_size=(H, W) or --image-size) to resize and center-crop them"
                )
        return np.stack(images)


# ----------------------------------------------------------------------------- array sources


class ArraySource(ImageSource):
    """Images held in one uint8 (N, H, W, 3) array (given, or read and validated on opening)."""

    kind = "array"

    def __init__(
        self,
        *,
        name: str,
        class_names: Sequence[str] | None,
        image_size: tuple[int, int] | None,
        read_arrays: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
        images: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        super().__init__(name=name, class_names=class_names, image_size=image_size)
        self._read_arrays = read_arrays
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None
        if images is not None:
            self._set(images, labels if labels is not None else np.full(len(images), -1))
        else:
            self._arrays()  # read and validate now, so a malformed file fails in open_source

    def _set(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x)
        y = np.asarray(y)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
            raise DataSourceError(f"{self.name}: images must be uint8 (N, H, W, 3), got {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DataSourceError(
                f"{self.name}: labels must be integers of shape ({len(x)},), got {y.dtype} {y.shape}"
            )
        self._x, self._y = x, y.astype(np.int64)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._x is None:
            assert self._read_arrays is not None
            self._set(*self._read_arrays())
        assert self._x is not None and self._y is not None
        return self._x, self._y

    def __len__(self) -> int:
        return len(self._arrays()[0])

    def labels(self) -> np.ndarray:
        return self._arrays()[1].copy()

    def _read(self, indices: np.ndarray) -> np.ndarray:
        return self._arrays()[0][indices]

    def _describe(self) -> dict[str, Any]:
        return {"spec": None}


class NpzSource(ArraySource):
    """A ``.npz`` with ``x`` uint8 (N, H, W, 3) RGB and ``y`` integer labels (N,).

    Class names: a ``class_names`` array in the file if present; else CIFAR-10's when the images
    are 32×32 with labels in 0..9 (the layout of ``shared/data/cifar10_*.npz``); else None.
    """

    kind = "npz"

    def __init__(self, path: Path, *, image_size: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        super().__init__(
            name=self.path.name, class_names=None, image_size=image_size, read_arrays=self._load_npz
        )
        self._sha256: str | None = None

    def _load_npz(self) -> tuple[np.ndarray, np.ndarray]:
        # np.load reads a zip archive as .npz, a .npy header as one bare array and anything else
        # as a pickle (refused): only the first is a dataset, so the others are named here.
        try:
            with open(self.path, "rb") as f:
                magic = f.read(6)
        except OSError as exc:
            raise DataSourceError(f"{self.path}: cannot read ({exc.strerror or exc})") from exc
        if magic == b"\x93NUMPY":
            raise DataSourceError(f"{self.path}: a single .npy array, not an .npz archive; "
                                  "save x (N, H, W, 3) uint8 and y (N,) with numpy.savez")
        if not magic.startswith(b"PK"):
            raise DataSourceError(f"{self.path}: not an .npz archive (no zip header); "
                                  "expected numpy.savez's x (N, H, W, 3) uint8 and y (N,)")
        try:
            with np.load(self.path, allow_pickle=False) as data:
                missing = [k for k in ("x", "y") if k not in data.files]
                if missing:
                    raise DataSourceError(
                        f"{self.path}: .npz has no {' or '.join(missing)} array "
                        f"(found: {', '.join(data.files) or 'nothing'}); expected x (N, H, W, 3) uint8 and y (N,)"
                    )
                x, y = data["x"], data["y"]
                names = [str(s) for s in data["class_names"]] if "class_names" in data.files else None
        except DataSourceError:
            raise
        except Exception as exc:  # noqa: BLE001  (a damaged member fails in zipfile, zlib, numpy's header parser...)
            raise DataSourceError(f"{self.path}: not a readable .npz file ({' '.join(str(exc).split())})") from exc
        if y.ndim == 2 and y.shape[1] == 1:  # (N, 1) column vectors, as some exporters write
            y = y[:, 0]
        if names is None and x.ndim == 4 and x.shape[1:3] == (32, 32) and len(y) and 0 <= y.min() and y.max() <= 9:
            names = list(CIFAR10_CLASSES)
        self.class_names = names
        return x, y

    def _describe(self) -> dict[str, Any]:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return {"spec": str(self.path.resolve()), "path": str(self.path.resolve()), "sha256": self._sha256}


_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {}


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only names a CIFAR batch pickle may resolve: what NumPy needs to rebuild an array."""
    if not _NUMPY_GLOBALS:
        try:
            from numpy._core import multiarray, numeric
        except ImportError:  # NumPy 1.x
            from numpy.core import multiarray, numeric  # type: ignore[no-redef]
        import codecs

        for module in ("numpy.core", "numpy._core"):
            _NUMPY_GLOBALS[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
            if hasattr(numeric, "_frombuffer"):
                _NUMPY_GLOBALS[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
        _NUMPY_GLOBALS[("numpy", "ndarray")] = np.ndarray
        _NUMPY_GLOBALS[("numpy", "dtype")] = np.dtype
        # Python 3 writes bytes as _codecs.encode(text, "latin1") under protocol 2.
        _NUMPY_GLOBALS[("_codecs", "encode")] = codecs.encode
    return _NUMPY_GLOBALS


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _numpy_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _safe_unpickle(path: Path) -> dict[str, Any]:
    """Read a CIFAR python batch: a dict of arrays, lists, numbers and strings, nothing else."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise DataSourceError(f"{path}: not a CIFAR python batch ({' '.join(str(exc).split())})") from exc
    if not isinstance(obj, dict):
        raise DataSourceError(f"{path}: not a CIFAR python batch (holds a {type(obj).__name__}, not a dict)")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        key = key.decode("latin1") if isinstance(key, bytes) else key
        if not isinstance(key, str) or not _is_plain(value):
            raise DataSourceError(f"{path}: not a CIFAR python batch (unexpected entry {key!r})")
        out[key] = value
    return out


def _is_plain(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, (bytes, str, int, float, bool, type(None)))


class CifarBatchesSource(ArraySource):
    """torchvision's ``cifar-10-batches-py`` folder: ``test_batch`` or ``data_batch_1..5``."""

    kind = "cifar10-python"

    def __init__(
        self, folder: Path, split: str = "test", *, image_size: tuple[int, int] | None = None,
        batch_files: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        self.folder = Path(folder)
        self.split = split
        if batch_files is None:
            if split == "test":
                batch_files = ["test_batch"]
            elif split == "train":
                batch_files = [f"data_batch_{i}" for i in range(1, 6)]
            else:
                raise DataSourceError(f"{self.folder}: CIFAR-10 has splits train and test, not {split!r}")
        self.batch_files = list(batch_files)
        missing = [b for b in self.batch_files if not (self.folder / b).is_file()]
        if missing:
            raise DataSourceError(f"{self.folder}: CIFAR-10 {split} split needs {', '.join(missing)}, not found")
        class_names = list(CIFAR10_CLASSES)
        meta = self.folder / "batches.meta"
        if meta.is_file():
            names = _safe_unpickle(meta).get("label_names")
            if isinstance(names, list) and all(isinstance(n, (str, bytes)) for n in names):
                class_names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
        super().__init__(
            name=f"CIFAR-10 {split} ({self.folder.name})",
            class_names=class_names,
            image_size=image_size,
            read_arrays=self._load_batches,
        )

    def _load_batches(self) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in self.batch_files:
            path = self.folder / name
            batch = _safe_unpickle(path)
            data, labels = batch.get("data"), batch.get("labels")
            if not isinstance(data, np.ndarray) or labels is None:
                raise DataSourceError(f"{path}: not a CIFAR python batch (no data/labels entries)")
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise DataSourceError(f"{path}: data must be uint8 (N, 3072), got {data.dtype} {data.shape}")
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (len(data),):
                raise DataSourceError(f"{path}: {len(labels)} labels for {len(data)} images")
            # Each row is the red plane, then green, then blue, each 32×32 row-major.
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(labels)
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    def _describe(self) -> dict[str, Any]:
        folder = self.folder.resolve()
        return {
            "spec": f"{folder}:{self.split}",
            "path": str(folder),
            "split": self.split,
            "sha256": {b: sha256_file(self.folder / b) for b in self.batch_files},
        }


class SvhnMatSource(ArraySource):
    """torchvision's SVHN ``{train,test,extra}_32x32.mat``: ``X`` (32, 32, 3, N), ``y`` (N, 1), 10 → 0."""

    kind = "svhn-mat"

    def __init__(self, path: Path, *, image_size: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.split = self.path.name.split("_")[0] if self.path.name.endswith("_32x32.mat") else None
        super().__init__(
            name=f"SVHN {self.split or ''} ({self.path.name})".replace("  ", " "),
            class_names=SVHN_CLASSES,
            image_size=image_size,
            read_arrays=self._load_mat,
        )
        self._sha256: str | None = None

    def _load_mat(self) -> tuple[np.ndarray, np.ndarray]:
        import scipy.io

        try:
            mat = scipy.io.loadmat(self.path, variable_names=["X", "y"])
        except Exception as exc:  # noqa: BLE001  (scipy's readers raise MatReadError and more on a damaged file)
            raise DataSourceError(f"{self.path}: not a readable SVHN .mat file ({' '.join(str(exc).split())})") from exc
        if "X" not in mat or "y" not in mat:
            raise DataSourceError(f"{self.path}: SVHN .mat needs X and y variables")
        x, y = mat["X"], mat["y"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
            raise DataSourceError(f"{self.path}: X must be uint8 (H, W, 3, N), got {x.dtype} {x.shape}")
        y = np.asarray(y).reshape(-1).astype(np.int64)
        y[y == 10] = 0  # SVHN labels the digit 0 as class 10
        return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y

    def _describe(self) -> dict[str, Any]:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        path = str(self.path.resolve())
        return {"spec": path, "path": path, "split": self.split, "sha256": self._sha256}


# ----------------------------------------------------------------------------- file sources


class ImageFilesSource(ImageSource):
    """A list of image files, each read with `read_image_uint8` when loaded.

    ``root`` is the folder paths are shown and fingerprinted relative to.
    """

    kind = "folder"

    def __init__(
        self,
        files: Sequence[Path],
        labels: Sequence[int] | np.ndarray | None = None,
        *,
        root: Path | None = None,
        name: str | None = None,
        class_names: Sequence[str] | None = None,
        image_size: tuple[int, int] | None = None,
        label_origin: str = "none",
        labels_file: Path | None = None,
    ) -> None:
        self.files = [Path(f) for f in files]
        self.root = Path(root) if root is not None else None
        self._labels = (
            np.asarray(labels, dtype=np.int64) if labels is not None else np.full(len(self.files), -1, np.int64)
        )
        if self._labels.shape != (len(self.files),):
            raise ValueError(f"{len(self._labels)} labels for {len(self.files)} files")
        self.label_origin = label_origin
        self.labels_file = labels_file
        default = self.root.name if self.root is not None else (self.files[0].name if self.files else "files")
        super().__init__(name=name or default, class_names=class_names, image_size=image_size)

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray:
        return self._labels.copy()

    def keys(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """The files at ``indices``, relative to the source's folder where there is one."""
        return [self._relative(self.files[int(i)]) for i in self._check_indices(indices)]

    def _read(self, indices: np.ndarray) -> list[np.ndarray]:
        return [read_image_uint8(self.files[int(i)]) for i in indices]

    def _relative(self, path: Path) -> str:
        if self.root is not None:
            try:
                return path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return str(path)

    def listing_sha256(self) -> str:
        """sha256 over every file's relative path and size, in order (cheap: no pixels are read)."""
        h = hashlib.sha256()
        for path in self.files:
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            h.update(f"{self._relative(path)}\0{size}\n".encode())
        return h.hexdigest()

    def _describe(self) -> dict[str, Any]:
        root = self.root.resolve() if self.root is not None else None
        record: dict[str, Any] = {
            "spec": str(root) if root is not None else None,
            "path": str(root) if root is not None else None,
            "labels": self.label_origin,
            "listing_sha256": self.listing_sha256(),
        }
        if self.root is None and len(self.files) == 1:
            record["spec"] = record["path"] = str(self.files[0].resolve())
        if self.labels_file is not None:
            record["labels_sha256"] = sha256_file(self.labels_file)
        return record


class NeurIPSDevSource(ImageFilesSource):
    """The NeurIPS-2017 adversarial competition dev set: ``images.csv`` plus ``<ImageId>.png`` files.

    Labels (``TrueLabel``) and `target_labels` (``TargetClass``) are converted from the CSV's
    1-indexed (background = 0) numbering to torchvision's 0-indexed ImageNet classes. Images are
    in the CSV's row order.
    """

    kind = "neurips2017-dev"

    def __init__(self, root: Path, *, image_size: tuple[int, int] | None = None) -> None:
        root = Path(root)
        csv_path = root / "images.csv"
        image_dir = root / "images" if (root / "images").is_dir() else root
        files: list[Path] = []
        labels: list[int] = []
        targets: list[int] = []
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                for col in ("ImageId", "TrueLabel"):
                    if col not in header:
                        raise DataSourceError(
                            f"{csv_path}: no {col} column (found: {', '.join(header) or 'nothing'})"
                        )
                for line, row in enumerate(reader, start=2):
                    true = _csv_int(row.get("TrueLabel"), csv_path, line, "TrueLabel")
                    target = (
                        _csv_int(row.get("TargetClass"), csv_path, line, "TargetClass")
                        if row.get("TargetClass") not in (None, "")
                        else 0
                    )
                    for value, col in ((true, "TrueLabel"), (target, "TargetClass")):
                        if not 0 <= value <= 1000:
                            raise DataSourceError(f"{csv_path}:{line}: {col} {value} is outside 0..1000")
                    files.append(image_dir / f"{row['ImageId']}.png")
                    labels.append(true - 1)
                    targets.append(target - 1)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataSourceError(f"{csv_path}: cannot read ({' '.join(str(exc).split())})") from exc
        if not files:
            raise DataSourceError(f"{csv_path}: no rows")
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise DataSourceError(
                f"{root}: {len(missing)} image(s) listed in images.csv are missing, e.g. {missing[0]}"
            )
        self._targets = np.asarray(targets, dtype=np.int64)
        super().__init__(
            files,
            labels,
            root=root,
            name=f"NeurIPS-2017 dev ({root.name})",
            class_names=_imagenet_classes(),
            image_size=image_size,
            label_origin="images.csv",
            labels_file=csv_path,
        )

    def target_labels(self) -> np.ndarray:
        """int64 (N,) 0-indexed ImageNet target classes of the targeted track (-1 where none)."""
        return self._targets.copy()


def _csv_int(text: str | None, path: Path, line: int, column: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise DataSourceError(f"{path}:{line}: {column} {text!r} is not an integer") from None


def _imagenet_classes() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


class SampleSource(ImageFilesSource):
    """scikit-image's example colour photographs (`SAMPLE_IMAGES`), read from the installed package."""

    kind = "sample"

    def __init__(self, *, image_size: tuple[int, int] | None = None) -> None:
        import skimage
        import skimage.data

        folder = Path(skimage.data.__file__).parent
        files = [folder / n for n in SAMPLE_IMAGES if (folder / n).is_file()]
        if not files:
            raise DataSourceError(
                f"the bundled sample needs scikit-image's example images, none found in {folder}"
            )
        self.skimage_version = skimage.__version__
        super().__init__(files, root=folder, name="sample (scikit-image photos)", image_size=image_size)

    def _describe(self) -> dict[str, Any]:
        return {
            "spec": "sample",
            "files": [p.name for p in self.files],
            "skimage_version": self.skimage_version,
            "listing_sha256": self.listing_sha256(),
        }


def scan_images(root: Path) -> list[Path]:
    """Image files under ``root`` by extension, recursive, hidden entries skipped, sorted by
    relative path; what an image folder holds for every command (`defend` included). A broken
    symlink is listed, so reading it fails loudly instead of the image going missing.

    Symlinked sub-folders are followed, as torchvision's ``ImageFolder`` does (a class folder is
    often a link into a shared dataset); a link to a folder the walk is already inside is a cycle and
    is not entered again. A sub-folder that cannot be listed is an error, not a silent gap."""
    found = []
    # The real folders on the way down to each folder walked: a link to any of them is a cycle.
    chain: dict[str, frozenset[str]] = {str(root): frozenset({os.path.realpath(root)})}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=_unreadable_folder):
        above = chain.pop(dirpath)
        kept = []
        for d in dirnames:
            if d.startswith("."):
                continue
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in above:
                kept.append(d)
                chain[os.path.join(dirpath, d)] = above | {real}
        dirnames[:] = kept
        for fname in filenames:
            if not fname.startswith(".") and os.path.splitext(fname)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / fname)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _unreadable_folder(exc: OSError) -> None:
    # os.walk skips a folder it cannot list without a word; its images would go missing.
    reason = exc.strerror or type(exc).__name__
    raise DataSourceError(f"cannot list folder {exc.filename}: {reason.lower()}") from exc


def _folder_source(root: Path, image_size: tuple[int, int] | None) -> ImageFilesSource:
    files = scan_images(root)
    if not files:
        raise DataSourceError(f"{root}: no image files found (expected {_LAYOUTS})")
    rel = [p.relative_to(root).as_posix() for p in files]
    labels_csv = root / "labels.csv"
    if labels_csv.is_file():
        labels, class_names = _read_labels_csv(labels_csv, rel)
        return ImageFilesSource(
            files, labels, root=root, class_names=class_names, image_size=image_size,
            label_origin="labels.csv", labels_file=labels_csv,
        )  # fmt: skip
    top_level = [r for r in rel if "/" not in r]
    if not top_level:
        # ImageFolder: every non-hidden sub-folder is a class, in sorted order (as torchvision).
        class_names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        index = {name: i for i, name in enumerate(class_names)}
        labels = [index[r.split("/", 1)[0]] for r in rel]
        return ImageFilesSource(
            files, labels, root=root, class_names=class_names, image_size=image_size,
            label_origin="class folders",
        )  # fmt: skip
    return ImageFilesSource(files, root=root, image_size=image_size)


def _read_labels_csv(path: Path, rel: list[str]) -> tuple[np.ndarray, list[str] | None]:
    """``filename,label`` rows (optional header) → labels aligned with ``rel`` (-1 where absent)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataSourceError(f"{path}: cannot read ({' '.join(str(exc).split())})") from exc
    if rows and rows[0][0].strip().lower() in ("filename", "file", "path", "image", "name"):
        rows = rows[1:]
    entries: dict[str, str] = {}
    for line, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise DataSourceError(f"{path}: row {line} has no label (expected filename,label)")
        entries[Path(row[0].strip()).as_posix()] = row[1].strip()
    unknown = sorted(set(entries) - set(rel))
    if unknown:
        raise DataSourceError(f"{path}: names {len(unknown)} file(s) not in the folder, e.g. {unknown[0]!r}")
    values = list(entries.values())
    class_names: list[str] | None = None
    if all(_is_int(v) for v in values):
        mapping = {v: int(v) for v in values}
        negative = [v for v in values if mapping[v] < -1]
        if negative:  # -1 is "unknown", as for a file the csv leaves out; below it is no class
            raise DataSourceError(f"{path}: label {negative[0]} is negative (labels are class indices; -1 means unknown)")
    else:
        class_names = sorted(set(values))
        mapping = {v: class_names.index(v) for v in values}
    labels = np.array([mapping[entries[r]] if r in entries else -1 for r in rel], dtype=np.int64)
    return labels, class_names


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- open / select


def _check_size(image_size: tuple[int, int] | int | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise UsageError(f"image size must be two positive integers (H, W), got {image_size}")
    return size  # type: ignore[return-value]


def _split_spec(text: str) -> tuple[Path, str | None]:
    path = Path(text).expanduser()
    if path.exists():
        return path, None
    if ":" in text:
        head, tail = text.rsplit(":", 1)
        head_path = Path(head).expanduser()
        if head_path.exists():
            if tail not in _SPLITS:
                raise DataSourceError(f"{text}: unknown split {tail!r}; use :train or :test (SVHN also :extra)")
            return head_path, tail
    raise DataSourceError(f"no such file or folder: {text} (expected {_LAYOUTS})")


def open_source(spec: str | os.PathLike[str], *, image_size: tuple[int, int] | int | None = None) -> ImageSource:
    """Open the dataset ``spec`` names (see the module docstring for the layouts).

    Args:
        spec: ``"sample"``, a path, or a path with a ``:train``/``:test``/``:extra`` split.
        image_size: (H, W) (or one int for square) every image is resized and center-cropped to;
            None keeps native sizes.

    Raises:
        DataSourceError: the path does not exist, or its layout is unknown or malformed.
    """
    size = _check_size(image_size)
    text = os.fspath(spec).strip()
    if text.lower() == "sample":
        return SampleSource(image_size=size)
    path, split = _split_spec(text)

    def no_split(layout: str) -> None:
        if split is not None:
            raise DataSourceError(f"{text}: a {layout} has no splits; drop ':{split}'")

    if path.is_file():
        suffix, name = path.suffix.lower(), path.name
        if suffix == ".npz":
            no_split(".npz file")
            return NpzSource(path, image_size=size)
        if suffix == ".mat":
            no_split(".mat file")
            return SvhnMatSource(path, image_size=size)
        if name == "test_batch" or (name.startswith("data_batch_") and name[11:].isdigit()):
            no_split("single CIFAR batch file")
            split_name = "test" if name == "test_batch" else "train"
            return CifarBatchesSource(path.parent, split_name, image_size=size, batch_files=[name])
        if name == "images.csv":
            no_split("NeurIPS-2017 dev set")
            return NeurIPSDevSource(path.parent, image_size=size)
        if suffix in IMAGE_EXTENSIONS:
            no_split("single image")
            return ImageFilesSource([path], image_size=size, name=name)
        raise DataSourceError(f"{path}: unknown dataset file (expected {_LAYOUTS})")
    if path.is_dir():
        for folder in (path, path / "cifar-10-batches-py"):
            if any((folder / f).is_file() for f in ("batches.meta", "test_batch", "data_batch_1")):
                return CifarBatchesSource(folder, split or "test", image_size=size)
        mats = {s: path / f"{s}_32x32.mat" for s in _SPLITS}
        if any(p.is_file() for p in mats.values()):
            chosen = split or "test"
            if not mats[chosen].is_file():
                found = ", ".join(p.name for p in mats.values() if p.is_file())
                raise DataSourceError(f"{path}: no {mats[chosen].name} for the SVHN {chosen} split (found: {found})")
            return SvhnMatSource(mats[chosen], image_size=size)
        if (path / "images.csv").is_file():
            no_split("NeurIPS-2017 dev set")
            return NeurIPSDevSource(path, image_size=size)
        no_split("folder of images")
        return _folder_source(path, size)
    raise DataSourceError(f"{path}: not a regular file or folder")


def select_indices(
    labels: np.ndarray,
    *,
    classes: Sequence[int] | None = None,
    per_class: int | None = None,
    limit: int | None = None,
) -> np.ndarray:
    """Pick source indices: a class subset, then the first ``per_class`` of each class, then ``limit``.

    - ``classes``: keep only images with these labels (images of unknown label, -1, are dropped).
    - ``per_class``: the first ``per_class`` images of each class in source order, grouped by
      class — in ``classes`` order if given, else ascending. With CIFAR-10 this is exactly
      ``np.concatenate([np.where(y == c)[0][:n] for c in range(10)])`` (``shared/data/SOURCES.md``).
    - ``limit``: at most this many of the result, from the front.

    Returns:
        int64 indices (n,). Without any option, all indices in order.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"select_indices expects labels of shape (N,), got {labels.shape}")
    for value, what in ((per_class, "per-class count"), (limit, "limit")):
        if value is not None and value < 0:
            raise UsageError(f"the {what} must be ≥ 0, got {value}")
    idx = np.arange(len(labels), dtype=np.int64)
    if classes is not None:
        class_list = [int(c) for c in classes]
        idx = idx[np.isin(labels, class_list)]
    if per_class is not None:
        if classes is None:
            known = labels[labels >= 0]
            if known.size == 0:
                raise UsageError("selecting per class needs labels, and this source has none")
            class_list = sorted({int(c) for c in known})
        picked = [idx[labels[idx] == c][:per_class] for c in dict.fromkeys(class_list)]
        idx = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    if limit is not None:
        idx = idx[:limit]
    return idx.astype(np.int64)


def resolve_classes(items: str | Sequence[str | int], class_names: Sequence[str] | None) -> list[int]:
    """Turn ``"cat,dog"``, ``"3,5"`` or ``["cat", 5]`` into class indices.

    Raises:
        UsageError: a name that is not one of ``class_names`` (or a name when there are none).
    """
    if isinstance(items, str):
        items = split_list(items)
    out: list[int] = []
    for item in items:
        if isinstance(item, (int, np.integer)) or (isinstance(item, str) and _is_int(item)):
            value = int(item)
            if value < 0 or (class_names is not None and value >= len(class_names)):
                limit = f"0..{len(class_names) - 1}" if class_names is not None else "≥ 0"
                raise UsageError(f"class index {value} is out of range ({limit})")
            out.append(value)
        elif class_names is not None and item in class_names:
            out.append(list(class_names).index(item))
        else:
            known = ", ".join(class_names) if class_names else "none: this source has no class names"
            raise UsageError(f"unknown class {item!r} (known: {known})")
    return out


def labels_for_model(
    source: ImageSource, class_names: Sequence[str] | None, num_classes: int | None, model_name: str = "the model"
) -> tuple[np.ndarray, list[str] | None]:
    """The source's labels as the model's class indices (-1 stays "unlabelled"), and the names of
    those indices.

    A source labels by its own classes: class folders ``cat/``, ``dog/`` are 0 and 1 (sorted, as
    torchvision's ImageFolder), where a CIFAR-10 model has cat = 3 and dog = 5. Names the model
    knows are mapped to its indices; a full label set under other names (ImageNet's wnid folders,
    in the model's sorted order) is kept as it is; names the model lacks are a `UsageError`, as are
    integer labels past its classes.
    """
    labels = np.asarray(source.labels(), dtype=np.int64)
    names = source.class_names
    model_names = list(class_names) if class_names is not None else None
    if names is not None and model_names is not None and list(names) != model_names:
        unknown = [n for n in names if n not in model_names]
        if not unknown:
            ambiguous = [n for n in names if model_names.count(n) > 1]  # (ImageNet has two "crane"s)
            if ambiguous:
                at = [i for i, m in enumerate(model_names) if m == ambiguous[0]]
                raise UsageError(f"{source.name}: class {ambiguous[0]!r} is ambiguous for {model_name} "
                                 f"(indices {', '.join(map(str, at))}); label those images by index")
            lookup = np.array([model_names.index(n) for n in names], dtype=np.int64)
            labels = np.where(labels >= 0, lookup[np.clip(labels, 0, None)], -1)
            names = model_names
        elif len(names) != len(model_names):
            raise UsageError(
                f"{source.name} labels its images with classes {model_name} does not have "
                f"({', '.join(map(repr, unknown[:3]))}{', ...' if len(unknown) > 3 else ''}); name them as its "
                f"classes ({', '.join(model_names[:5])}{', ...' if len(model_names) > 5 else ''}) or label by index"
            )
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise UsageError(f"{source.name} has label {int(labels.max())}, but {model_name} has {num_classes} classes")
    return labels, (list(names) if names is not None else model_names)


def iter_batches(
    source: ImageSource,
    indices: Sequence[int] | np.ndarray,
    batch_size: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (indices, uint8 (n, H, W, 3) images) in order, ``batch_size`` at a time.

    ``on_progress(done, total)`` is called after each batch has been consumed.
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be ≥ 1, got {batch_size}")
    idx = np.asarray(indices, dtype=np.int64)
    total = len(idx)
    if on_progress is not None:
        on_progress(0, total)
    for start in range(0, total, batch_size):
        chunk = idx[start : start + batch_size]
        yield chunk, source.load(chunk)
        if on_progress is not None:
            on_progress(start + len(chunk), total)
