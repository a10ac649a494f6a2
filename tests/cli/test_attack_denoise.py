from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from advkit.cli import app
from advkit.data.store import PairStore
from advkit.models import save_denoiser
from tests.conftest import near_identity_denoiser

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["-q", *args])


@pytest.fixture(scope="module")
def tiny_kpn(tmp_path_factory):
    """A small KPN near identity, so the test does not depend on the shipped checkpoint."""
    kpn = near_identity_denoiser("kpn")
    return save_denoiser(kpn, tmp_path_factory.mktemp("kpn") / "kpn.safetensors")


@pytest.fixture(scope="module")
def attack_run(tiny_kpn, cifar_test_npz, weights_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ad") / "run"
    result = run("--json", "attack-denoise", "--data", str(cifar_test_npz), "--model", "resnet20",
                 "--denoiser", str(tiny_kpn), "--method", "pasadena,denoise,fgsm", "--limit", "12",
                 "--steps", "5", "--out", str(out), "--save-png", "--seed", "3")
    assert result.exit_code == 0, result.output + result.stderr
    return out, json.loads(result.stdout)


def test_attack_denoise_reports_every_method(attack_run):
    _, payload = attack_run
    assert payload["n"] == 12 and set(payload["methods"]) == {"pasadena", "denoise", "fgsm"}
    for r in payload["methods"].values():
        assert 0 <= r["success"] <= 1 and np.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1
    # FGSM at 8/255 on an undefended resnet20 flips most predictions; a near-identity KPN flips few.
    assert payload["methods"]["fgsm"]["success"] > payload["methods"]["denoise"]["success"]
    # Pasadena starts from the denoiser output, so its success is at least the denoiser's.
    assert payload["methods"]["pasadena"]["success"] >= payload["methods"]["denoise"]["success"]


def test_attack_denoise_writes_stores_pngs_and_results(attack_run):
    out, payload = attack_run
    assert json.loads((out / "results.json").read_text())["n"] == 12
    for method in ("pasadena", "denoise", "fgsm"):
        with PairStore(out / f"{method}.h5", require_complete=True) as store:
            assert len(store) == 12
            pred_noisy, pred_out = store.field("pred_clean"), store.field("pred_adv")
            # The store's own predictions give back the reported success rate.
            assert np.mean(pred_noisy != pred_out) == pytest.approx(payload["methods"][method]["success"])
        assert len(list((out / method).glob("*.png"))) == 12
        # ... and they are the predictions of the images as stored
        assert run("store", "verify", str(out / f"{method}.h5"), "--predictions").exit_code == 0
    assert len(list((out / "noisy").glob("*.png"))) == 12


def test_attack_denoise_bad_input_is_one_line(tiny_kpn, cifar_test_npz, weights_dir, tmp_path):
    cases = [
        (["--method", "nope"], "unknown method"),
        (["--eps", "2"], "out of range"),
        (["--model", "resnet999"], "resnet999"),
        (["--loss", "hinge"], "unknown --loss"),
        (["--refine", "-1"], "--refine"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--kernel-step", "0"], "kernel_step must be > 0"),
        (["--edges", "canny", "--canny-width", "4"], "positive odd number"),
        (["--out", str(tmp_path / "ad.txt")], "a pair store (*.h5) or a folder"),
        (["--out", str(tmp_path / "ad.png")], "a pair store (*.h5) or a folder"),
        # a file where the output's folder should be: refused before the attack runs (it was an
        # "internal error: FileExistsError" after it)
        (["--out", str(tmp_path / "blocker" / "y.h5")], "blocker is not a folder"),
        (["--out", str(tmp_path / "blocker" / "sub")], "blocker is not a folder"),
    ]
    (tmp_path / "blocker").write_bytes(b"")
    for extra, needle in cases:
        args = ["attack-denoise", "--data", str(cifar_test_npz), "--model", "resnet20", "--denoiser",
                str(tiny_kpn), "--limit", "2", "--out", str(tmp_path / "x.h5")]
        # later options override earlier ones in Typer, so the bad value wins
        result = run(*args, *extra)
        assert result.exit_code != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
        assert not (tmp_path / "x.h5").exists()
    assert not (tmp_path / "ad.txt").exists() and not (tmp_path / "ad.png").exists()


def test_attack_options_reach_the_attack(tiny_kpn, cifar_test_npz, weights_dir, tmp_path):
    """--variant, --lam, --theta, --alpha, --confidence, --diversity, --gaussian, --edges and
    --transfer-to each end up in what ran (the recorded config and the transfer rates)."""
    base = ["--json", "attack-denoise", "--data", str(cifar_test_npz), "--model", "resnet20", "--denoiser",
            str(tiny_kpn), "--method", "pasadena", "--limit", "4", "--steps", "2"]
    result = run(*base, "--variant", "paper", "--lam", "0.7", "--theta", "0.3", "--alpha", "0.05", "--gaussian",
                 "--edges", "canny", "--canny-width", "5", "--transfer-to", "resnet32", "--out", str(tmp_path / "p.h5"))
    assert result.exit_code == 0, result.output + result.stderr
    payload = json.loads(result.stdout)
    cfg = payload["pasadena"]
    assert cfg["variant"] == "paper" and cfg["steps"] == 2
    assert cfg["lam"] == pytest.approx(0.7) and cfg["theta"] == pytest.approx(0.3) and cfg["alpha"] == pytest.approx(0.05)
    assert cfg["denoiser"] == "gaussian" and cfg["edges"]["name"] == "canny" and cfg["edges"]["width"] == 5
    assert set(payload["methods"]["pasadena"]["transfer"]) == {"resnet32"}
    # confidence and diversity belong to the advkit variant
    result = run(*base, "--confidence", "1.5", "--diversity", "0.25", "--out", str(tmp_path / "a.h5"))
    assert result.exit_code == 0, result.output + result.stderr
    cfg = json.loads(result.stdout)["pasadena"]
    assert cfg["variant"] == "advkit" and cfg["confidence"] == pytest.approx(1.5) and cfg["diversity"] == pytest.approx(0.25)
