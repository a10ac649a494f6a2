from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from advkit.cli import app
from advkit.data.images import read_image, write_png
from advkit.data.store import PairStore

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["-q", *args])


def _one_line_error(result, needle=""):
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr


@pytest.fixture(scope="module")
def sample_png(tmp_path_factory):
    import skimage.data

    path = tmp_path_factory.mktemp("img") / "coffee.png"
    write_png(path, skimage.data.coffee())
    return path


def test_defend_one_photo_with_the_default(sample_png, tmp_path):
    out = tmp_path / "out.png"
    result = run("--json", "defend", str(sample_png), str(out))
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["arch"] == "unet-filt" and info["denoiser"] == "default"
    a, b = read_image(sample_png), read_image(out)
    assert a.shape == b.shape
    assert 0 < (a - b).abs().mean() < 0.05


def test_defend_cifar_image(cifar_first_100, tmp_path):
    x, _ = cifar_first_100
    write_png(tmp_path / "c.png", x[0])
    assert run("defend", str(tmp_path / "c.png"), str(tmp_path / "d.png")).exit_code == 0
    assert read_image(tmp_path / "d.png").shape == (3, 32, 32)


def test_defend_folder(cifar_first_100, tmp_path):
    x, _ = cifar_first_100
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for i in range(3):
        write_png(tmp_path / "in" / ("sub" if i else "") / f"{i}.png", x[i])
    result = run("--json", "defend", str(tmp_path / "in"), str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 3
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == [
        "0.png", "sub/1.png", "sub/2.png"]


def test_defend_store(tmp_path, cifar_test_npz, weights_dir):
    store = tmp_path / "pairs.h5"
    assert run("gen-adv", "--data", str(cifar_test_npz), "--model", "resnet20", "--eps", "8/255", "--per-class", "2",
               "--steps", "5", "--out", str(store)).exit_code == 0
    _one_line_error(run("defend", str(store), str(tmp_path / "defended.png")), "name it *.h5")
    out = tmp_path / "defended.h5"
    result = run("--json", "defend", str(store), str(out), "--model", "resnet20")
    assert result.exit_code == 0, result.output
    with PairStore(store) as a, PairStore(out) as b:
        assert len(b) == len(a) and b.info.complete
        assert np.array_equal(a.field("label"), b.field("label"))
        assert (b.field("pred_adv") >= 0).all()
        assert "defense" in b._file.attrs
    # the stored predictions are those of the stored (float16-difference) images
    verified = run("--json", "store", "verify", str(out), "--predictions")
    assert verified.exit_code == 0 and json.loads(verified.stdout)["ok"], verified.output
    # a store with a NaN delta: "internal error: ... NaN" (or numbers computed from it)
    with h5py.File(store, "r+") as f:
        f["delta"][3, 0, 0, 0] = np.nan
    _one_line_error(run("defend", str(store), str(tmp_path / "again.h5")), "row 3 holds a NaN")
    assert not (tmp_path / "again.h5").exists()


def test_pafilt_uncertainty_png(sample_png, tmp_path):
    result = run("defend", str(sample_png), str(tmp_path / "o.png"), "--denoiser", "advfilter-cifar10-pafilt",
                 "--save-uncertainty", str(tmp_path / "w.png"))
    assert result.exit_code == 0, result.output
    w = read_image(tmp_path / "w.png")
    assert w.shape == read_image(sample_png).shape
    result = run("defend", str(sample_png), str(tmp_path / "o2.png"), "--save-uncertainty", str(tmp_path / "w2.png"))
    _one_line_error(result, "PA-Filt")
    assert not (tmp_path / "o2.png").exists() and not (tmp_path / "w2.png").exists()  # refused before writing
    # a folder (or store) has no one map to write: refused, not ignored
    result = run("defend", str(sample_png.parent), str(tmp_path / "od"), "--denoiser", "advfilter-cifar10-pafilt",
                 "--save-uncertainty", str(tmp_path / "w3.png"))
    _one_line_error(result, "one image")
    assert not (tmp_path / "od").exists() and not (tmp_path / "w3.png").exists()


def test_greyscale_and_rgba_are_converted_with_a_warning(tmp_path):
    Image.fromarray((np.random.default_rng(0).random((20, 24)) * 255).astype(np.uint8), "L").save(tmp_path / "g.png")
    Image.fromarray((np.random.default_rng(1).random((20, 24, 4)) * 255).astype(np.uint8), "RGBA").save(tmp_path / "a.png")
    for name in ("g.png", "a.png"):
        result = runner.invoke(app, ["defend", str(tmp_path / name), str(tmp_path / f"o_{name}")])
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1
        assert read_image(tmp_path / f"o_{name}").shape == (3, 20, 24)


def test_bad_inputs_are_one_line_and_write_nothing(sample_png, tmp_path):
    _one_line_error(run("defend", str(tmp_path / "missing.png"), str(tmp_path / "o.png")), "not found")
    (tmp_path / "notes.txt").write_text("not an image")
    _one_line_error(run("defend", str(tmp_path / "notes.txt"), str(tmp_path / "o.png")))
    data = sample_png.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    _one_line_error(run("defend", str(tmp_path / "trunc.png"), str(tmp_path / "o.png")))
    (tmp_path / "afile").write_text("x")
    _one_line_error(run("defend", str(sample_png), str(tmp_path / "afile" / "o.png")), "not a folder")
    _one_line_error(run("defend", str(sample_png), str(tmp_path / "o.png"), "--denoiser", "nope"), "unknown denoiser")
    # PNG bytes under another name would mislabel the file
    _one_line_error(run("defend", str(sample_png), str(tmp_path / "o.jpg")), "name the output *.png")
    _one_line_error(run("defend", str(sample_png), str(tmp_path / "o.png"), "--denoiser", "advfilter-cifar10-pafilt",
                        "--save-uncertainty", str(tmp_path / "w.tif")), "name the output *.png")
    assert not (tmp_path / "o.jpg").exists()
    from advkit.models import create_denoiser, save_denoiser

    ck = save_denoiser(create_denoiser("kpn", width=4), tmp_path / "kpn")
    data = ck.read_bytes()
    (tmp_path / "bad.safetensors").write_bytes(data[:100])
    (tmp_path / "bad.json").write_text((tmp_path / "kpn.json").read_text())
    _one_line_error(run("defend", str(sample_png), str(tmp_path / "o.png"), "--denoiser",
                        str(tmp_path / "bad.safetensors")), "truncated")
    # a checkpoint that is not a denoiser (a classifier's weights) is refused the same way
    import torch

    from advkit.models.cifar_resnet import CifarResNet

    torch.save({"state_dict": CifarResNet(20).state_dict()}, tmp_path / "r20.th")
    _one_line_error(run("defend", str(sample_png), str(tmp_path / "o.png"), "--denoiser", str(tmp_path / "r20.th")))
    assert not (tmp_path / "o.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind
