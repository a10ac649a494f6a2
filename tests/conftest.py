"""Shared fixtures: the real data in ../shared/data, an isolated ADVKIT_HOME, CUDA skipping."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ADVKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
CIFAR_TEST = SHARED_DATA / "cifar10_test.npz"
CIFAR_TRAIN = SHARED_DATA / "cifar10_train_5k.npz"
WEIGHTS_DIR = SHARED_DATA / "weights"


def pytest_configure(config: pytest.Config) -> None:
    # Tests never touch the user's cache; CIFAR weights resolve from ../shared/data/weights.
    home = REPO / ".pytest_cache" / "advkit_home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["ADVKIT_HOME"] = str(home)
    os.environ["ADVKIT_WEIGHTS_DIRS"] = str(WEIGHTS_DIR)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# The CIFAR-10 checkpoints the tests load (../shared/data/SOURCES.md).
CIFAR_WEIGHTS = ("resnet20", "resnet32", "resnet44", "resnet56")


def _require(path: Path, *members: str) -> Path:
    """``path`` (and the ``members`` in it, by name or stem), else a skip, or with
    ``ADVKIT_REQUIRE_DATA=1`` (as `.ci/run` sets) a failure: there the real-data tests (every
    cross-check against torchattacks and ART among them) must not pass by skipping."""
    missing = [] if path.exists() else [path]
    if not missing and members:
        present = {p.name for p in path.iterdir()} | {p.stem for p in path.iterdir()}
        missing = [path / m for m in members if m not in present]
    if missing:
        message = f"real data not found at {missing[0]} (set ADVKIT_SHARED_DATA)"
        if os.environ.get("ADVKIT_REQUIRE_DATA", "") not in ("", "0"):
            pytest.fail(message + "; ADVKIT_REQUIRE_DATA is set", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def cifar_test_npz() -> Path:
    return _require(CIFAR_TEST)


@pytest.fixture(scope="session")
def cifar_train_npz() -> Path:
    return _require(CIFAR_TRAIN)


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    return _require(WEIGHTS_DIR, *CIFAR_WEIGHTS)


def first_per_class(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first ``n`` images of each class, in class order (data/SOURCES.md)."""
    return np.concatenate([np.where(y == c)[0][:n] for c in range(int(y.max()) + 1)])


@pytest.fixture(scope="session")
def cifar_first_1000(cifar_test_npz: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 100 test images of each class as ([0,1] NCHW float, labels)."""
    d = np.load(cifar_test_npz)
    idx = first_per_class(d["y"], 100)
    x = torch.from_numpy(d["x"][idx]).permute(0, 3, 1, 2).float().div(255)
    return x, torch.from_numpy(d["y"][idx])


@pytest.fixture(scope="session")
def cifar_first_100(cifar_first_1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 10 test images of each class."""
    x, y = cifar_first_1000
    idx = torch.cat([torch.nonzero(y == c).flatten()[:10] for c in range(10)])
    return x[idx], y[idx]


def near_identity_denoiser(arch: str, width: int = 4, noise: float = 0.002, seed: int = 0):
    """A small untrained denoiser of ``arch`` (identity at init) with its weights jittered a little,
    so tests exercise real kernels without depending on the shipped checkpoints."""
    from advkit.models import create_denoiser

    torch.manual_seed(seed)
    model = create_denoiser(arch, width=width).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model
