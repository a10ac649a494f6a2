from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from advkit.data.store import PairStore, PairStoreWriter
from advkit.errors import CheckpointError, OutputExistsError, StoreFormatError, UsageError
from advkit.models import load_denoiser
from advkit.train import TrainConfig, image_loss, train_denoiser

EPS = [1e-2, 1e-1, 3e-1]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, cifar_test_npz):
    """16 real CIFAR images × 3 radii with a brightening perturbation of +eps on most pixels.

    (No attack needed; a perturbation with a consistent direction gives every architecture a
    well-defined first gradient step.)"""
    path = tmp_path_factory.mktemp("store") / "tiny.h5"
    d = np.load(cifar_test_npz)
    idx = np.concatenate([np.where(d["y"] == c)[0][:2] for c in range(8)])
    clean = np.repeat(d["x"][idx], len(EPS), axis=0)
    eps = np.tile(np.asarray(EPS, np.float32), len(idx))
    rng = np.random.default_rng(0)
    sign = np.where(rng.random(clean.shape) < 0.8, 1.0, -1.0)
    delta = (sign * eps[:, None, None, None]).astype(np.float16)
    w = PairStoreWriter.create(path, rows=len(clean), image_shape=(32, 32, 3), source={"kind": "test"},
                               model="resnet20", attack={"name": "sign-noise"}, seed=0, class_names=None,
                               precision="fp32", config={})
    w.write_rows(0, clean=clean, delta=delta, label=np.repeat(d["y"][idx], len(EPS)), eps=eps,
                 source_index=np.repeat(idx, len(EPS)), pred_clean=np.full(len(clean), -1),
                 pred_adv=np.full(len(clean), -1))
    w.finish()
    return path


def _full_batch_l1(model, store_path):
    with PairStore(store_path) as s:
        clean, adv = s.images(slice(None))
    with torch.no_grad():
        return image_loss(model(adv, clamp=False), clean).item()


@pytest.mark.parametrize("arch", ["unet-filt", "unet-add", "pafilt", "kpn", "unet-filt-multihead"])
def test_one_step_lowers_the_loss(arch, tiny_store, tmp_path):
    cfg = TrainConfig(arch=arch, loss="img", train=str(tiny_store), out=str(tmp_path / arch), width=4,
                      epochs=1, fusion_epochs=0, batch_size=48, lr=1e-5)
    before = _full_batch_l1(__import__("advkit.models", fromlist=["create_denoiser"]).create_denoiser(
        arch, width=4, **({} if arch == "unet-add" else {"kernel_size": 5})), tiny_store)
    record = train_denoiser(cfg)
    after = _full_batch_l1(load_denoiser(tmp_path / arch / "last.safetensors"), tiny_store)
    assert after < before, (before, after)
    assert record["history"][0]["epoch"] == 1


def test_a_nan_loss_stops_the_run_before_it_saves_a_nan_model(tiny_store, tmp_path):
    """A store with NaN deltas trained to NaN weights, saved as the best model, exit 0."""
    import shutil

    import h5py

    from advkit.errors import AdvkitError

    bad = tmp_path / "nan.h5"
    shutil.copy(tiny_store, bad)
    with h5py.File(bad, "r+") as f:
        delta = f["delta"][...]
        delta[::2] = np.nan
        f["delta"][...] = delta
    cfg = TrainConfig(arch="unet-add", loss="img", train=str(bad), out=str(tmp_path / "o"), width=4, epochs=1,
                      batch_size=48)
    with pytest.raises(StoreFormatError, match=r"nan.h5: row 0 holds a NaN or infinite perturbation"):
        train_denoiser(cfg)  # (refused as the store is read)
    assert not (tmp_path / "o" / "best.safetensors").exists()
    # a step too large: the first non-finite loss stops the run
    cfg = TrainConfig(arch="unet-add", loss="img", train=str(tiny_store), out=str(tmp_path / "o"), width=4, epochs=1,
                      batch_size=8, lr=1e30)
    with pytest.raises(AdvkitError, match=r"training loss is (nan|inf) at epoch 1, step [2-9]: lower --lr"):
        train_denoiser(cfg)
    assert not (tmp_path / "o" / "best.safetensors").exists()


def test_train_eps_matches_printed_radii_and_refuses_missing_ones(tiny_store, tmp_path):
    """--train-eps took radii by exact float32 value and dropped the rest without a word: the 6 digits
    `store info` prints for 8/255 (0.0313725) matched nothing, 0.5 (not in the store) was ignored."""
    from advkit.data.store import PairDataset

    assert len(PairDataset(tiny_store, eps=[0.0999999])) == 16  # 1e-1 as printed to 6 digits, 16 images
    with pytest.raises(UsageError, match=r"holds no rows at eps 0.5 \(its radii: 0.01, 0.1, 0.3\)"):
        train_denoiser(TrainConfig(arch="unet-add", train=str(tiny_store), out=str(tmp_path / "o"), width=4,
                                   epochs=1, train_eps=[1e-1, 0.5]))
    with pytest.raises(UsageError, match="holds no rows at eps 0.2"):
        PairDataset(tiny_store, eps=[0.2])


def test_semantic_loss_step_lowers_feature_distance(tiny_store, tmp_path, weights_dir):
    from advkit.models import create_classifier, create_denoiser
    from advkit.train import SemanticLoss

    classifier = create_classifier("resnet20")
    sem = SemanticLoss(classifier, "layer3")
    with PairStore(tiny_store) as s:
        clean, adv = s.images(slice(None))
    with torch.no_grad():
        before = sem(create_denoiser("unet-filt", width=4)(adv, clamp=False), clean).item()
    cfg = TrainConfig(arch="unet-filt", loss="sem", model="resnet20", train=str(tiny_store),
                      out=str(tmp_path / "sem"), width=4, epochs=1, batch_size=48, lr=1e-5)
    train_denoiser(cfg, classifier=classifier)
    model = load_denoiser(tmp_path / "sem" / "last.safetensors")
    with torch.no_grad():
        after = sem(model(adv, clamp=False), clean).item()
    assert after < before


def test_bad_feature_layer(tiny_store, tmp_path, weights_dir):
    cfg = TrainConfig(arch="unet-filt", loss="sem", model="resnet20", feature_layer="layer9",
                      train=str(tiny_store), out=str(tmp_path / "x"), width=4, epochs=1)
    with pytest.raises(UsageError, match="no layer 'layer9'"):
        train_denoiser(cfg)


def test_resume_continues_exactly(tiny_store, tmp_path):
    common = dict(arch="unet-filt", loss="img", train=str(tiny_store), val=str(tiny_store), width=4, epochs=3,
                  batch_size=8, seed=5, val_per_eps=4)
    train_denoiser(TrainConfig(**common, out=str(tmp_path / "straight")))

    class Stop(Exception):
        pass

    def stop_after_first(report):
        if report.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train_denoiser(TrainConfig(**common, out=str(tmp_path / "split")), on_epoch=stop_after_first)
    with pytest.raises(OutputExistsError):
        train_denoiser(TrainConfig(**common, out=str(tmp_path / "split")))
    with pytest.raises(CheckpointError, match="epochs=3, not 4"):
        train_denoiser(TrainConfig(**{**common, "epochs": 4}, out=str(tmp_path / "split")), resume=True)
    record = train_denoiser(TrainConfig(**common, out=str(tmp_path / "split")), resume=True)
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3]
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "split" / "last.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "split" / "best.safetensors").is_file()
    saved = json.loads((tmp_path / "split" / "last.json").read_text())
    assert saved["train"]["seed"] == 5 and saved["config"]["arch"] == "unet-filt"
    # a damaged training state is refused in one line, not resumed from nonsense
    (tmp_path / "split" / "train_state.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"train_state.pt is damaged, so the run cannot be resumed"):
        train_denoiser(TrainConfig(**{**common, "epochs": 4}, out=str(tmp_path / "split")), resume=True)


def test_same_seed_same_weights(tiny_store, tmp_path):
    for name in ("a", "b"):
        train_denoiser(TrainConfig(arch="kpn", train=str(tiny_store), out=str(tmp_path / name), width=4,
                                   epochs=1, batch_size=16, seed=3))
    a = load_file(str(tmp_path / "a" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tiny_store, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29731",
           "-m", "advkit", "-q", "--device", "cpu", "train-denoiser", "--train", str(tiny_store), "--out", str(out),
           "--arch", "unet-filt", "--width", "4", "--epochs", "2", "--batch-size", "8"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "last.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    model = load_denoiser(out)
    with PairStore(tiny_store) as s:
        clean, adv = s.images(slice(None))
    with torch.no_grad():
        assert image_loss(model(adv), clean) < image_loss(adv, clean)


def test_pafilt_best_checkpoint_has_a_trained_fusion_net(tiny_store, tmp_path, weights_dir):
    """Without --val, "best" compares training losses; PA-Filt's fusion stage has another loss, so its
    epochs supersede the Y-Net's instead of being compared with them."""
    cfg = TrainConfig(arch="pafilt", loss="img", model="resnet20", train=str(tiny_store), out=str(tmp_path / "pa"),
                      width=4, epochs=1, fusion_epochs=1, batch_size=24)
    record = train_denoiser(cfg)
    assert [h["stage"] for h in record["history"]] == ["denoiser", "fusion"]
    assert record["best"]["epoch"] == 2 and record["best"]["stage"] == "fusion"
    best = load_file(str(tmp_path / "pa" / "best.safetensors"))
    last = load_file(str(tmp_path / "pa" / "last.safetensors"))
    assert all(torch.equal(best[k], last[k]) for k in last)


@pytest.mark.parametrize(("fusion_loss", "fusion_input"),
                         [("ce", "uncertainty"), ("error", "uncertainty+image"), ("choice", "uncertainty")])
def test_init_then_fusion_only_keeps_the_ynet(fusion_loss, fusion_input, tiny_store, tmp_path, weights_dir):
    first = TrainConfig(arch="pafilt", loss="img", model="resnet20", train=str(tiny_store), out=str(tmp_path / "y"),
                        width=4, epochs=1, fusion_epochs=0, batch_size=24)
    train_denoiser(first)
    ynet = load_file(str(tmp_path / "y" / "last.safetensors"))
    fuse = TrainConfig(arch="pafilt", loss="img", model="resnet20", train=str(tiny_store), out=str(tmp_path / "f"),
                       width=4, epochs=0, fusion_epochs=1, batch_size=24, init=str(tmp_path / "y"),
                       fusion_loss=fusion_loss, fusion_input=fusion_input)
    record = train_denoiser(fuse)
    assert [h["stage"] for h in record["history"]] == ["fusion"]
    after = load_file(str(tmp_path / "f" / "last.safetensors"))
    assert all(torch.equal(after[k], ynet[k]) for k in ynet if not k.startswith("fusion."))
    assert any(after[k].shape != ynet[k].shape or not torch.equal(after[k], ynet[k])
               for k in ynet if k.startswith("fusion."))
    assert load_denoiser(tmp_path / "f" / "last.safetensors").fusion_input == fusion_input


def test_init_refuses_another_shape_or_arch(tiny_store, tmp_path):
    train_denoiser(TrainConfig(arch="unet-filt", train=str(tiny_store), out=str(tmp_path / "w4"), width=4, epochs=1,
                               batch_size=48))
    with pytest.raises(CheckpointError, match="do not fit"):
        train_denoiser(TrainConfig(arch="unet-filt", train=str(tiny_store), out=str(tmp_path / "w8"), width=8,
                                   epochs=1, batch_size=48, init=str(tmp_path / "w4")))
    with pytest.raises(CheckpointError):
        train_denoiser(TrainConfig(arch="unet-add", train=str(tiny_store), out=str(tmp_path / "add"), width=4,
                                   epochs=1, batch_size=48, init=str(tmp_path / "w4")))
    with pytest.raises(UsageError, match="--epochs must be >= 1"):
        train_denoiser(TrainConfig(arch="unet-filt", train=str(tiny_store), out=str(tmp_path / "z"), width=4,
                                   epochs=0, init=str(tmp_path / "w4")))


def test_pafilt_starts_from_a_filt_and_freeze_keeps_parts_fixed(tiny_store, tmp_path):
    """--init FILT into pafilt: both branches start as that Filt (so Ĩ_sl = Ĩ_m = the Filt's output);
    --freeze keeps the named parts bit-identical while the rest trains."""
    train_denoiser(TrainConfig(arch="unet-filt", train=str(tiny_store), out=str(tmp_path / "filt"), width=4,
                               epochs=1, batch_size=48))
    filt = load_denoiser(tmp_path / "filt" / "last.safetensors")
    pa = TrainConfig(arch="pafilt", loss="img", train=str(tiny_store), out=str(tmp_path / "pa"), width=4,
                     epochs=1, fusion_epochs=0, batch_size=24, init=str(tmp_path / "filt"),
                     freeze=["encoder", "decoder_sl", "head_sl"], train_eps=[1e-1, 3e-1])
    train_denoiser(pa)
    model = load_denoiser(tmp_path / "pa" / "last.safetensors")
    with PairStore(tiny_store) as s:
        _, adv = s.images(slice(0, 6))
    with torch.no_grad():
        parts = model(adv, return_all=True)
        torch.testing.assert_close(parts["sl"], filt(adv), rtol=0, atol=0)
        assert not torch.equal(parts["m"], filt(adv))  # φ_m trained away from its Filt start
    before = filt.state_dict()
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("encoder."))
    assert any(not torch.equal(after["decoder_m." + k[len("decoder."):]], before[k])
               for k in before if k.startswith("decoder."))


def test_freezing_all_but_the_m_branch_needs_the_m_radii(tiny_store, tmp_path):
    """Encoder and SL branch frozen: only rows at the M radii (0.1, 0.3, 0.5) reach a trainable
    weight, and a batch without one failed mid-run ("element 0 of tensors does not require grad",
    as "internal error"); a store with other radii is refused before anything is written."""
    config = dict(arch="pafilt", loss="img", train=str(tiny_store), width=4, epochs=1, fusion_epochs=0,
                  batch_size=1, freeze=["encoder", "decoder_sl", "head_sl"])
    with pytest.raises(UsageError, match="only the M branch.*also has 0.01: add --train-eps 0.1,0.3,0.5"):
        train_denoiser(TrainConfig(**config, out=str(tmp_path / "m")))
    assert not (tmp_path / "m").exists()
    train_denoiser(TrainConfig(**config, out=str(tmp_path / "m"), train_eps=[1e-1, 3e-1]))  # batches of one row each
    assert (tmp_path / "m" / "last.safetensors").is_file()


def test_bad_fusion_loss(tiny_store, tmp_path):
    with pytest.raises(UsageError, match="--fusion-loss"):
        train_denoiser(TrainConfig(arch="pafilt", model="resnet20", train=str(tiny_store), out=str(tmp_path / "p"),
                                   width=4, epochs=1, fusion_loss="mse"))
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("option, needle", [({"width": 0}, "--width"), ({"kernel_size": 4}, "--kernel-size"),
                                             ({"kernel_size": 17}, "--kernel-size")])
def test_bad_shape_options_fail_before_out_is_made(tiny_store, tmp_path, option, needle):
    config = {"arch": "unet-filt", "train": str(tiny_store), "out": str(tmp_path / "s"), "width": 4, **option}
    with pytest.raises(UsageError, match=needle):
        train_denoiser(TrainConfig(**config))
    assert not (tmp_path / "s").exists()


def test_freezing_the_fusion_net_leaves_its_stage_nothing_to_train(tiny_store, tmp_path, weights_dir):
    with pytest.raises(UsageError, match="nothing to train in the fusion stage"):
        train_denoiser(TrainConfig(arch="pafilt", model="resnet20", train=str(tiny_store), out=str(tmp_path / "f"),
                                   width=4, epochs=1, fusion_epochs=1, batch_size=48, freeze=["fusion"]))
    assert not (tmp_path / "f").exists()


def test_freeze_errors(tiny_store, tmp_path):
    base = dict(arch="unet-filt", train=str(tiny_store), width=4, epochs=1, batch_size=48)
    with pytest.raises(UsageError, match="matches no parameter"):
        train_denoiser(TrainConfig(**base, out=str(tmp_path / "a"), freeze=["decoder_sl"]))
    with pytest.raises(UsageError, match="nothing to train"):
        train_denoiser(TrainConfig(**base, out=str(tmp_path / "b"), freeze=["encoder", "decoder", "head"]))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    train_denoiser(TrainConfig(arch="unet-add", train=str(tiny_store), out=str(tmp_path / "addw"), width=4, epochs=1,
                               batch_size=48))
    with pytest.raises(CheckpointError, match="unet-add checkpoint"):
        train_denoiser(TrainConfig(arch="pafilt", train=str(tiny_store), out=str(tmp_path / "c"), width=4, epochs=1,
                                   fusion_epochs=0, batch_size=48, init=str(tmp_path / "addw")))


def test_fusion_only_init_takes_the_ynet_but_not_the_fusion_net(tiny_store, tmp_path):
    from advkit.models.denoisers import PAFilt
    from advkit.train.trainer import _load_initial_weights

    train_denoiser(TrainConfig(arch="pafilt", loss="img", train=str(tiny_store), out=str(tmp_path / "y"), width=4,
                               epochs=1, fusion_epochs=0, batch_size=48))
    saved = load_denoiser(tmp_path / "y" / "last.safetensors").state_dict()
    torch.manual_seed(5)
    fresh = PAFilt(width=4)
    fresh_fusion = {k: v.clone() for k, v in fresh.state_dict().items() if k.startswith("fusion.")}
    _load_initial_weights(fresh, str(tmp_path / "y"), "pafilt", keep_fusion=False)
    after = fresh.state_dict()
    assert all(torch.equal(after[k], saved[k]) for k in saved if not k.startswith("fusion."))
    assert all(torch.equal(after[k], fresh_fusion[k]) for k in fresh_fusion)
    _load_initial_weights(fresh, str(tmp_path / "y"), "pafilt")
    assert all(torch.equal(fresh.state_dict()[k], saved[k]) for k in saved)


def test_cli_staged_pafilt_options(tiny_store, tmp_path):
    """The CLI passes --init FILT, --freeze (comma list), --fusion-loss and --fusion-input through, and a
    bad --freeze is one error line with exit code 2 and nothing written."""
    from typer.testing import CliRunner

    from advkit.cli import app

    runner = CliRunner()
    base = ["-q", "--device", "cpu", "train-denoiser", "--train", str(tiny_store), "--width", "4", "--batch-size", "48"]
    filt = runner.invoke(app, [*base, "--out", str(tmp_path / "filt"), "--epochs", "1"])
    assert filt.exit_code == 0, filt.output
    staged = runner.invoke(app, [*base, "--out", str(tmp_path / "pa"), "--arch", "pafilt", "--epochs", "1",
                                 "--fusion-epochs", "0", "--init", str(tmp_path / "filt"),
                                 "--freeze", "encoder, decoder_sl,head_sl", "--train-eps", "1e-1,3e-1", "--fusion-loss", "choice",
                                 "--fusion-input", "uncertainty+image"])
    assert staged.exit_code == 0, staged.output
    record = json.loads((tmp_path / "pa" / "last.json").read_text())
    assert record["train"]["freeze"] == ["encoder", "decoder_sl", "head_sl"]
    assert record["train"]["fusion_loss"] == "choice" and record["config"]["fusion_input"] == "uncertainty+image"
    bad = runner.invoke(app, [*base, "--out", str(tmp_path / "bad"), "--arch", "pafilt", "--fusion-epochs", "0",
                              "--freeze", "decoder"])
    assert bad.exit_code == 2
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --freeze 'decoder' matches no parameter"), bad.output
    assert not (tmp_path / "bad").exists()
