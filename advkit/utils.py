"""Small shared helpers: atomic file writes, hashing, device and seed handling."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from advkit.errors import OutputError, UsageError


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    Readers never see a half-written file: either the old file (or nothing) or the complete new one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name is cut so that any name the filesystem allows for ``final`` (255 bytes)
    # leaves room for the dot, mkstemp's 8 characters and the suffix.
    stem = final.name.encode()[:160].decode(errors="ignore")
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=suffix if suffix is not None else ".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            # mkstemp creates 0600 files; give the output the permissions a plain open() would.
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, final)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.errno in _DEVICE_ERRORS:
            raise OutputError(f"cannot write {final}: {os.strerror(exc.errno)}") from exc
        raise


@contextlib.contextmanager
def cleaned_up_on_failure(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """An output folder that a failed block leaves no trace of, if the block made it.

    What the block wrote stays (each file written whole through `atomic_path`); if ``folder``
    did not exist before and the block fails, the folders it left empty, ``folder`` included,
    are removed, so a run that fails before writing anything leaves nothing behind.
    """
    folder = Path(folder)
    made_here = not folder.exists()
    try:
        yield folder
    except BaseException:
        if made_here and folder.is_dir():
            for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                if not any(sub.iterdir()):
                    sub.rmdir()
            if not any(folder.iterdir()):
                folder.rmdir()
        raise


@contextlib.contextmanager
def exclusive_run(target: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the one lock that runs writing ``target`` take: a second run on the same output fails
    at once with an `OutputError` instead of rewriting the file under the first.

    The lock is an advisory ``flock`` on a hidden ``.NAME.lock`` beside ``target``, released by the
    kernel when its holder dies (a killed run never leaves a stale lock) and removed on exit. Where
    the platform, the folder or the filesystem allows no lock file, the block runs unlocked.
    """
    target = Path(target)
    lock = target.with_name(f".{target.name}.lock")
    fd = _take_lock(lock, target)
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                lock.unlink()
            os.close(fd)


def _take_lock(lock: Path, target: Path) -> int | None:
    """An open descriptor of ``lock`` holding its exclusive ``flock``, None where no lock can be
    taken; `OutputError` where another process holds it."""
    try:
        import fcntl
    except ImportError:  # (no flock on this platform)
        return None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"{target} is being written by another run (it holds {lock}); "
                              "wait for it to finish") from None
        except OSError:  # (a filesystem without locks)
            os.close(fd)
            return None
        # The holder before us may have removed the lock file between our open and our flock.
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


# Write failures that are the device's, not a bug: a full disk or quota, a read-only filesystem.
_DEVICE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def check_output_dir(path: str | os.PathLike[str]) -> None:
    """Fail early, before any work, with one `OutputError` line if files cannot be created in
    ``path``'s folder (``path`` itself where it is a folder): a component that is a file, a
    read-only folder."""
    path = Path(path)
    probe = path if path.is_dir() else path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot write {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: {probe} is not writable")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU. ``cuda`` without a GPU is a `UsageError`."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was asked for but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError("--device mps was asked for but this PyTorch has no MPS (Apple GPU) device")
    elif dev.type != "cpu":  # (torch knows more device types than advkit's kernels and tests cover)
        raise UsageError(f"unsupported device {device!r}; use auto, cpu or cuda")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded with ``seed`` for explicit use."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``: a comma list with blanks stripped and empty items dropped."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_float_list(text: str, what: str = "value") -> list[float]:
    """Parse ``"1e-3,3e-3,8/255"`` into floats (fractions allowed); a clear `UsageError` otherwise."""
    values = []
    for part in split_list(text):
        try:
            if "/" in part:
                num, den = part.split("/")
                values.append(float(num) / float(den))
            else:
                values.append(float(part))
        except (ValueError, ZeroDivisionError) as exc:
            raise UsageError(f"cannot read {what} {part!r} as a number") from exc
    if not values:
        raise UsageError(f"no {what} given")
    return values


# Values a hair outside [0, upper] come from float rounding (x / 255 * 255, a filter's output);
# anything further out is a caller passing the wrong scale (0..255, or images normalized for a model,
# which advkit's classifiers do inside).
_RANGE_SLACK = 1e-6


def floating_dtype(module: object) -> torch.dtype | None:
    """The dtype of ``module``'s first floating-point parameter or buffer (float32 for a usual
    model, float64 after ``.double()``, float16 after ``.half()``); None for a module without any
    or for a plain callable. Attacks and defenses feed a model its own dtype and keep their own
    arithmetic in float32."""
    if not isinstance(module, torch.nn.Module):
        return None
    # (chained, not listed: attacks call this on every forward, and it stops at the first tensor)
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def check_value_range(
    images: torch.Tensor, what: str = "images", upper: float = 1.0, hint: str = " (0..255 images? divide by 255)"
) -> None:
    """`ValueError` unless every value of ``images`` lies in [0, ``upper``] (relative slack 1e-6);
    NaN is refused with its own message; an empty tensor passes. ``hint`` ends the message when the
    values reach past twice ``upper`` and none lies clearly below 0; values well below 0 look like
    images already normalized with a mean and std, and the message says so."""
    if images.numel() == 0:
        return
    with torch.no_grad():  # one device sync for both bounds (on a GPU each read waits for the queue)
        lo, hi = torch.stack(torch.aminmax(images.detach())).float().tolist()
    if lo != lo or hi != hi:  # NaN compares unequal to itself
        raise ValueError(f"{what} contains NaN")
    slack = _RANGE_SLACK * upper
    if lo < -slack or hi > upper + slack:
        if lo < -0.1 * upper:
            hint = (" (normalized images? pass [0, 1] images and put the normalization inside the model, "
                    "e.g. advkit.models.Classifier)" if upper == 1.0 else "")
        elif hi <= 2 * upper:
            hint = ""
        raise ValueError(f"{what} must lie in [0, {upper:g}], found values in [{lo:.6g}, {hi:.6g}]{hint}")
