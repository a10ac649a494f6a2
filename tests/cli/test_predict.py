from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from advkit.cli import app
from advkit.data import write_png
from advkit.data.sources import SampleSource

runner = CliRunner()
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def predictions(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["predictions"]


def assert_one_error_line(result, *needles: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def cifar_pngs(cifar_test_npz, tmp_path_factory) -> tuple[list[Path], list[int]]:
    """The first test image of each class, written as PNG, and their labels."""
    with np.load(cifar_test_npz) as d:
        x, y = d["x"], d["y"]
    folder = tmp_path_factory.mktemp("cifar_png")
    idx = [int(np.where(y == c)[0][0]) for c in range(10)]
    paths = [write_png(folder / f"{i}_{CIFAR10[y[i]]}.png", x[i]) for i in idx]
    return paths, [int(y[i]) for i in idx]


@pytest.fixture(scope="module")
def astronaut() -> Path:
    return SampleSource().files[0]  # scikit-image's 512×512 astronaut photo


@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory) -> Path:
    """Randomly initialised resnet50 weights: exercises the ImageNet path offline, not accuracy."""
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet50-random.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def test_resnet20_classifies_cifar_pngs(cifar_pngs, weights_dir):
    paths, labels = cifar_pngs
    rows = predictions(run("predict", *paths, "--model", "resnet20", "--json", "--top-k", "3"))
    assert [r["input"] for r in rows] == [str(p) for p in paths]
    for row in rows:
        probs = [t["prob"] for t in row["topk"]]
        assert len(row["topk"]) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert row["top1"] == CIFAR10[row["index"]] == row["topk"][0]["name"]
    # resnet20 gets all ten right, the closest (dog) by 0.47 to 0.40 in probability
    assert [r["index"] for r in rows] == labels


def test_table_output(cifar_pngs, weights_dir):
    result = runner.invoke(app, ["predict", str(cifar_pngs[0][0]), "-m", "resnet20"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    header, row = [ln for ln in result.stdout.splitlines() if ln.startswith(("┃", "│"))]
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["input", "top-1", "prob", "top-5"]
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[0] == str(cifar_pngs[0][0]) and cells[1] == "airplane" and float(cells[2]) > 0.9
    assert cells[3].startswith("airplane ") and cells[3].count(",") == 4


def test_large_photo_is_resized_for_each_model(astronaut, resnet50_weights, weights_dir):
    small = predictions(run("predict", astronaut, "-m", "resnet20", "--json"))
    assert small[0]["top1"] in CIFAR10
    result = run("predict", astronaut, "-m", "resnet50", "--weights", resnet50_weights, "--json", "--top-k", "2")
    rows = predictions(result)
    assert json.loads(result.stdout)["input_size"] == [224, 224]
    assert len(rows[0]["topk"]) == 2 and 0 <= rows[0]["index"] < 1000


def test_data_source_with_labels_reports_accuracy(cifar_test_npz, weights_dir):
    result = run("predict", "--data", cifar_test_npz, "--per-class", "2", "--classes", "cat,ship", "-m", "resnet20", "--json")
    out = json.loads(result.stdout)
    assert [r["input"] for r in out["predictions"]] == [
        "cifar10_test.npz[3000]", "cifar10_test.npz[3001]", "cifar10_test.npz[8000]", "cifar10_test.npz[8001]",
    ]  # fmt: skip
    assert [r["label"] for r in out["predictions"]] == [3, 3, 8, 8]
    assert out["num_labelled"] == 4 and out["accuracy"] == np.mean([r["index"] == r["label"] for r in out["predictions"]])
    assert out["source"]["kind"] == "npz"


def test_class_folders_are_scored_in_the_models_classes(cifar_pngs, tmp_path, weights_dir):
    """ship/ and truck/ folders are 0 and 1 in folder order, 8 and 9 for the model: the labels are
    mapped by name, so accuracy is reported (and right); folders the model has no class for get none."""
    paths, labels = cifar_pngs
    for path, label in zip(paths, labels):
        if CIFAR10[label] in ("ship", "truck"):
            (tmp_path / "v" / CIFAR10[label]).mkdir(parents=True, exist_ok=True)
            (tmp_path / "v" / CIFAR10[label] / path.name).write_bytes(path.read_bytes())
    out = json.loads(run("predict", "--data", str(tmp_path / "v"), "-m", "resnet20", "--json").stdout)
    assert [r["label"] for r in out["predictions"]] == [8, 9] and out["num_labelled"] == 2
    assert out["accuracy"] == np.mean([r["index"] == r["label"] for r in out["predictions"]])
    (tmp_path / "v" / "submarine").mkdir()
    (tmp_path / "v" / "submarine" / "s.png").write_bytes(paths[0].read_bytes())
    result = runner.invoke(app, ["predict", "--data", str(tmp_path / "v"), "-m", "resnet20", "--json"])
    out = json.loads(result.stdout)
    assert "accuracy" not in out and len(out["predictions"]) == 3
    # said, not silently dropped
    assert result.stderr.startswith("warning: no accuracy:") and "submarine" in result.stderr, result.stderr


def test_sample_source_runs_offline(weights_dir):
    rows = predictions(run("predict", "--data", "sample", "--limit", "2", "-m", "resnet20", "--json"))
    assert [r["input"] for r in rows] == ["astronaut.png", "chelsea.png"]


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_greyscale_and_rgba_warn_once_and_still_work(tmp_path, cifar_pngs, weights_dir, mode):
    img = Image.open(cifar_pngs[0][0]).convert(mode)
    if mode == "RGBA":
        img.putalpha(Image.new("L", img.size, 128))
    path = tmp_path / f"odd_{mode}.png"
    img.save(path)
    result = run("predict", path, "-m", "resnet20", "--json")
    assert len(predictions(result)) == 1
    warnings_ = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings_) == 1 and str(path) in warnings_[0], result.stderr
    assert "Traceback" not in result.output


def test_unknown_model(cifar_pngs):
    assert_one_error_line(run("predict", cifar_pngs[0][0], "-m", "resnet9000"), "unknown model", "resnet20")


def test_missing_weights_file(cifar_pngs, tmp_path):
    assert_one_error_line(
        run("predict", cifar_pngs[0][0], "-m", "resnet20", "--weights", tmp_path / "none.th"), "none.th"
    )


def test_truncated_png(cifar_pngs, tmp_path, weights_dir):
    data = cifar_pngs[0][0].read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_error_line(run("predict", cifar_pngs[0][0], cut, "-m", "resnet20"), str(cut), "truncated")


def test_non_image_file(tmp_path, weights_dir):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\nworld\n")
    assert_one_error_line(run("predict", notes, "-m", "resnet20"), str(notes), "not an image")


def test_missing_file_and_folder_inputs(tmp_path):
    assert_one_error_line(run("predict", tmp_path / "gone.png", "-m", "resnet20"), "no such file")
    assert_one_error_line(run("predict", tmp_path, "-m", "resnet20"), "--data")


def test_usage_errors(tmp_path, cifar_pngs):
    assert_one_error_line(run("predict", "-m", "resnet20"), "nothing to classify")
    assert_one_error_line(run("predict", cifar_pngs[0][0]), "--model")
    assert_one_error_line(run("predict", cifar_pngs[0][0], "-m", "resnet20", "--data", "sample"), "not both")
    assert_one_error_line(run("predict", cifar_pngs[0][0], "-m", "resnet20", "--limit", "3"), "need --data")
    assert_one_error_line(run("predict", cifar_pngs[0][0], "-m", "resnet20", "--top-k", "0"), "--top-k")
    assert_one_error_line(run("predict", "--data", tmp_path / "nowhere", "-m", "resnet20"), "no such file or folder")
    assert_one_error_line(run("predict", "--data", "sample", "-m", "resnet20", "--limit", "0"), "selection from --data is empty")
