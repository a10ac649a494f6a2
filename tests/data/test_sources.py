from __future__ import annotations

import csv
import json
import os
import pickle
import warnings

import numpy as np
import pytest
import scipy.io

from advkit.data import CIFAR10_CLASSES, SAMPLE_IMAGES, iter_batches, open_source, resolve_classes, select_indices
from advkit.data.sources import CifarBatchesSource, ImageSource, NeurIPSDevSource, SvhnMatSource
from advkit.errors import DataSourceError, ImageReadError, UsageError
from tests.data._fixtures import make_cifar_batches, random_rgb, save

CIFAR_TEST_SHA256 = "7680bc3986ef9775c5a752bdb2833d89bf5262c58dd3691a06a491ce1b6a7d6e"  # SOURCES.md


def assert_reopens(source: ImageSource) -> dict:
    """describe() is JSON-able and its spec reopens an equal source."""
    record = json.loads(json.dumps(source.describe()))
    for key in ("kind", "spec", "num_images", "image_size", "class_names"):
        assert key in record
    again = open_source(record["spec"], image_size=source.image_size)
    assert type(again) is type(source) and len(again) == len(source)
    np.testing.assert_array_equal(again.labels(), source.labels())
    return record


# ------------------------------------------------------------------ the real CIFAR-10 .npz


@pytest.fixture(scope="module")
def cifar_npz_source(cifar_test_npz):
    return open_source(str(cifar_test_npz))


@pytest.fixture(scope="module")
def cifar_arrays(cifar_test_npz):
    with np.load(cifar_test_npz) as d:
        return d["x"], d["y"]


def test_npz_source_matches_the_file(cifar_npz_source, cifar_arrays):
    x, y = cifar_arrays
    src = cifar_npz_source
    assert len(src) == 10000 and src.class_names == CIFAR10_CLASSES
    labels = src.labels()
    assert labels.dtype == np.int64 and labels.shape == (10000,)
    np.testing.assert_array_equal(labels, y)
    idx = [0, 999, 1000, 9999, 5]
    np.testing.assert_array_equal(src.load(idx), x[idx])
    t = src.load_tensor([3, 4])
    assert t.shape == (2, 3, 32, 32) and float(t.min()) >= 0 and float(t.max()) <= 1
    assert src.keys([7]) == ["cifar10_test.npz[7]"]


def test_npz_per_class_selection_is_the_sources_md_rule(cifar_npz_source, cifar_arrays):
    y = cifar_arrays[1]
    rule = np.concatenate([np.where(y == c)[0][:100] for c in range(10)])  # shared/data/SOURCES.md
    picked = select_indices(cifar_npz_source.labels(), per_class=100)
    assert picked.dtype == np.int64
    np.testing.assert_array_equal(picked, rule)
    assert np.bincount(y[picked]).tolist() == [100] * 10


def test_npz_describe_records_the_file_hash(cifar_npz_source):
    record = assert_reopens(cifar_npz_source)
    assert record["kind"] == "npz" and record["sha256"] == CIFAR_TEST_SHA256
    assert record["image_size"] is None and record["num_images"] == 10000


def test_npz_image_size_policy(cifar_test_npz, cifar_arrays):
    same = open_source(cifar_test_npz, image_size=(32, 32))
    np.testing.assert_array_equal(same.load([1, 2]), cifar_arrays[0][[1, 2]])  # no resampling
    bigger = open_source(cifar_test_npz, image_size=64)
    assert bigger.load([1, 2]).shape == (2, 64, 64, 3)
    assert bigger.describe()["image_size"] == [64, 64]


def test_bad_npz_files(tmp_path):
    np.savez(tmp_path / "noy.npz", x=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DataSourceError, match="no y"):
        open_source(tmp_path / "noy.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([object()] * 2, dtype=object), y=np.zeros(2))
    with pytest.raises(DataSourceError, match="not a readable .npz"):
        open_source(tmp_path / "obj.npz")
    # not an archive: np.load would read a .npy as a bare array and anything else as a (refused) pickle
    np.save(tmp_path / "bare.npy", np.zeros((2, 4, 4, 3), np.uint8))
    (tmp_path / "bare.npy").rename(tmp_path / "bare.npz")
    with pytest.raises(DataSourceError, match="a single .npy array, not an .npz archive"):
        open_source(tmp_path / "bare.npz")
    for name, content in (("empty.npz", b""), ("text.npz", b"x,y\n1,2\n")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataSourceError, match="not an .npz archive"):
            open_source(tmp_path / name)
    # damaged archives: cut short, or a member's compressed bytes changed
    np.savez_compressed(tmp_path / "ok.npz", x=np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3),
                        y=np.zeros(2, np.int64))
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    start = data.index(b"x.npy") + 5  # the first member's compressed bytes follow its name
    (tmp_path / "flipped.npz").write_bytes(data[:start] + bytes(b ^ 0xFF for b in data[start:start + 40])
                                           + data[start + 40:])
    for name in ("cut.npz", "flipped.npz"):
        with pytest.raises(DataSourceError, match="not a readable .npz"):
            open_source(tmp_path / name).load([0, 1])
    np.savez(tmp_path / "flat.npz", x=np.zeros((2, 12), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(DataSourceError, match=r"\(N, H, W, 3\)"):
        open_source(tmp_path / "flat.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros((3, 8, 8, 3), np.uint8), y=np.array([0, 1, 2]),
             class_names=np.array(["a", "b", "c"]))  # fmt: skip
    assert open_source(tmp_path / "other.npz").class_names == ["a", "b", "c"]


# ------------------------------------------------------------------ torchvision CIFAR-10 python batches


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_python_batches(tmp_path, protocol):
    folder, truth = make_cifar_batches(tmp_path, protocol=protocol)
    src = open_source(folder)
    assert isinstance(src, CifarBatchesSource) and src.split == "test"
    x, y = truth["test_batch"]
    assert len(src) == len(x)
    np.testing.assert_array_equal(src.load(range(len(x))), x)  # R/G/B planes reassembled to HWC
    np.testing.assert_array_equal(src.labels(), y)
    assert src.class_names[:2] == ["plane", "car"]  # from batches.meta

    train = open_source(f"{folder}:train")
    xs = np.concatenate([truth[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(train.load(range(len(train))), xs)
    assert open_source(f"{tmp_path}:train").describe()["split"] == "train"  # the folder holding it
    single = open_source(folder / "data_batch_3")
    np.testing.assert_array_equal(single.labels(), truth["data_batch_3"][1])
    assert_reopens(src)
    assert_reopens(train)


def test_cifar_batches_refuse_arbitrary_objects(tmp_path):
    folder, _ = make_cifar_batches(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataSourceError, match="refusing to load posix.mkdir|refusing to load nt.mkdir"):
        open_source(folder)
    assert not marker.exists()


def test_cifar_batches_missing_train_files(tmp_path):
    folder, _ = make_cifar_batches(tmp_path)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataSourceError, match="data_batch_4"):
        open_source(f"{folder}:train")
    with pytest.raises(DataSourceError, match="unknown split 'valid'"):
        open_source(f"{folder}:valid")


# ------------------------------------------------------------------ torchvision SVHN .mat


def test_svhn_mat(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9]], np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    src = open_source(tmp_path)
    assert isinstance(src, SvhnMatSource) and src.split == "test"
    assert src.labels().tolist() == [0, 1, 2, 0, 9]
    np.testing.assert_array_equal(src.load([0, 4]), x[..., [0, 4]].transpose(3, 0, 1, 2))
    assert src.class_names == [str(d) for d in range(10)]
    assert len(open_source(tmp_path / "test_32x32.mat")) == 5
    assert_reopens(src)
    with pytest.raises(DataSourceError, match="train_32x32.mat"):
        open_source(f"{tmp_path}:train")
    # a cut-off file: scipy's own MatReadError becomes the one-line source error
    data = (tmp_path / "test_32x32.mat").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "test_32x32.mat").write_bytes(data[:7])
    with pytest.raises(DataSourceError, match="not a readable SVHN .mat file"):
        open_source(tmp_path / "cut" / "test_32x32.mat").labels()


# ------------------------------------------------------------------ NeurIPS-2017 dev layout


def _neurips(tmp_path, in_subfolder=True):
    folder = tmp_path / "dev"
    image_dir = folder / "images" if in_subfolder else folder
    ids = ["6ccf2f8b5f0b0bb1", "0a0b1c2d3e4f5a6b", "ffeeddccbbaa9988"]
    for i, image_id in enumerate(ids):
        save(image_dir / f"{image_id}.png", random_rgb(20, 20, seed=i))
    with open(folder / "images.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "URL", "x1", "y1", "x2", "y2", "TrueLabel", "TargetClass",
                    "OriginalLandingURL", "License", "Author", "AuthorProfileURL"])  # fmt: skip
        for image_id, true, target in zip(ids, (1, 306, 1000), (12, 1, 500)):
            w.writerow([image_id, "http://x", 0, 0, 1, 1, true, target, "", "", "", ""])
    return folder, image_dir, ids


@pytest.mark.parametrize("in_subfolder", [True, False])
def test_neurips_dev_labels_are_zero_indexed(tmp_path, in_subfolder):
    folder, image_dir, ids = _neurips(tmp_path, in_subfolder)
    src = open_source(folder)
    assert isinstance(src, NeurIPSDevSource)
    assert src.labels().tolist() == [0, 305, 999]
    assert src.target_labels().tolist() == [11, 0, 499]
    assert len(src.class_names) == 1000 and src.class_names[0] == "tench"
    np.testing.assert_array_equal(src.load([1])[0], random_rgb(20, 20, seed=1))
    assert src.keys([0])[0].endswith(f"{ids[0]}.png")
    record = assert_reopens(src)
    assert record["kind"] == "neurips2017-dev" and "labels_sha256" in record
    assert len(open_source(folder / "images.csv")) == 3


def test_neurips_dev_missing_image(tmp_path):
    folder, image_dir, ids = _neurips(tmp_path)
    (image_dir / f"{ids[2]}.png").unlink()
    with pytest.raises(DataSourceError, match="1 image.*missing"):
        open_source(folder)


# ------------------------------------------------------------------ plain folders


def test_folder_recursive_sorted_unlabelled(tmp_path):
    for name, seed in (("b.png", 1), ("a.png", 0), ("sub/c.jpg", 2), (".hidden.png", 3), (".git/d.png", 4)):
        save(tmp_path / name, random_rgb(8, 8, seed=seed))
    (tmp_path / "README.txt").write_text("not an image")
    src = open_source(tmp_path)
    assert src.keys(range(len(src))) == ["a.png", "b.png", "sub/c.jpg"]
    assert src.labels().tolist() == [-1, -1, -1] and src.class_names is None
    np.testing.assert_array_equal(src.load([1])[0], random_rgb(8, 8, seed=1))
    record = assert_reopens(src)
    assert record["labels"] == "none" and len(record["listing_sha256"]) == 64


def test_folder_with_labels_csv(tmp_path):
    for name in ("x1.png", "x2.png", "deep/x3.png"):
        save(tmp_path / name, random_rgb(4, 4))
    (tmp_path / "labels.csv").write_text("filename,label\nx2.png,7\ndeep/x3.png,3\n")
    src = open_source(tmp_path)
    assert src.keys(range(3)) == ["deep/x3.png", "x1.png", "x2.png"]
    assert src.labels().tolist() == [3, -1, 7] and src.class_names is None

    (tmp_path / "labels.csv").write_text("x1.png,dog\nx2.png,cat\ndeep/x3.png,dog\n")
    src = open_source(tmp_path)
    assert src.class_names == ["cat", "dog"] and src.labels().tolist() == [1, 1, 0]

    (tmp_path / "labels.csv").write_text("x1.png,1\nmissing.png,2\n")
    with pytest.raises(DataSourceError, match="missing.png"):
        open_source(tmp_path)
    (tmp_path / "labels.csv").write_text("x1.png,-1\nx2.png,-5\n")  # -1 is "unknown"; -5 no class at all
    with pytest.raises(DataSourceError, match="label -5 is negative"):
        open_source(tmp_path)


def test_image_folder_class_subfolders(tmp_path):
    for name in ("dog/1.png", "cat/2.png", "cat/3.png", "empty_class/"):
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            save(tmp_path / name, random_rgb(4, 4))
    src = open_source(tmp_path)
    assert src.class_names == ["cat", "dog", "empty_class"]  # every sub-folder, sorted, as torchvision
    assert src.keys(range(3)) == ["cat/2.png", "cat/3.png", "dog/1.png"]
    assert src.labels().tolist() == [0, 0, 1]
    assert select_indices(src.labels(), per_class=1).tolist() == [0, 2]


def test_symlinked_class_folders_are_followed_and_cycles_are_not(tmp_path):
    """A class folder linked in from elsewhere was an empty class (its images skipped), where
    torchvision's ImageFolder follows links; a link back up must not loop forever."""
    save(tmp_path / "data" / "cat" / "1.png", random_rgb(4, 4))
    save(tmp_path / "elsewhere" / "dogs" / "2.png", random_rgb(4, 4, seed=1))
    save(tmp_path / "elsewhere" / "more" / "3.png", random_rgb(4, 4, seed=2))
    (tmp_path / "data" / "dog").symlink_to(tmp_path / "elsewhere" / "dogs")
    (tmp_path / "data" / "cat" / "loop").symlink_to(tmp_path / "data")  # a cycle through the root
    (tmp_path / "elsewhere" / "dogs" / "more").symlink_to(tmp_path / "elsewhere" / "more")
    (tmp_path / "elsewhere" / "more" / "back").symlink_to(tmp_path / "elsewhere" / "dogs")  # a cycle two deep
    src = open_source(tmp_path / "data")
    assert src.class_names == ["cat", "dog"]
    assert src.keys(range(len(src))) == ["cat/1.png", "dog/2.png", "dog/more/3.png"]
    assert src.labels().tolist() == [0, 1, 1]
    np.testing.assert_array_equal(src.load([1])[0], random_rgb(4, 4, seed=1))


def test_a_folder_that_cannot_be_listed_is_an_error_not_a_gap(tmp_path, monkeypatch):
    save(tmp_path / "ok" / "1.png", random_rgb(4, 4))
    save(tmp_path / "locked" / "2.png", random_rgb(4, 4))
    real_scandir = os.scandir

    def scandir(path="."):  # as chmod 000 would, even when the tests run as root
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataSourceError, match=r"cannot list folder .*locked: permission denied"):
        open_source(tmp_path)


def test_labels_for_model_speak_the_models_classes(tmp_path):
    from advkit.data.sources import labels_for_model
    from advkit.errors import UsageError

    for name in ("dog/1.png", "cat/2.png", "cat/3.png"):
        save(tmp_path / "pets" / name, random_rgb(4, 4))
    pets = open_source(tmp_path / "pets")
    assert pets.labels().tolist() == [0, 0, 1]  # the folder's own numbering: cat 0, dog 1
    labels, names = labels_for_model(pets, CIFAR10_CLASSES, 10, "resnet20")
    assert labels.tolist() == [3, 3, 5] and names == list(CIFAR10_CLASSES)  # CIFAR-10's cat and dog
    save(tmp_path / "pets" / "wolf" / "4.png", random_rgb(4, 4))
    with pytest.raises(UsageError, match=r"classes resnet20 does not have \('wolf'\)"):
        labels_for_model(open_source(tmp_path / "pets"), CIFAR10_CLASSES, 10, "resnet20")
    with pytest.raises(UsageError, match=r"class 'cat' is ambiguous for m \(indices 0, 2\)"):
        labels_for_model(pets, ["cat", "dog", "cat"], 3, "m")
    # a full label set under other names (ImageNet's wnid folders) keeps the sorted order
    for k in range(10):
        save(tmp_path / "wnids" / f"n0{k}" / "a.png", random_rgb(4, 4))
    labels, _ = labels_for_model(open_source(tmp_path / "wnids"), CIFAR10_CLASSES, 10)
    assert labels.tolist() == list(range(10))
    # integer labels: as they are, within the model's classes; unlabelled stays -1
    np.savez(tmp_path / "ints.npz", x=np.zeros((3, 4, 4, 3), np.uint8), y=np.array([7, -1, 2]))
    assert labels_for_model(open_source(tmp_path / "ints.npz"), None, 10)[0].tolist() == [7, -1, 2]
    with pytest.raises(UsageError, match="has label 7, but the model has 5 classes"):
        labels_for_model(open_source(tmp_path / "ints.npz"), None, 5)


def test_mixed_sizes_need_an_image_size(tmp_path):
    save(tmp_path / "small.png", random_rgb(10, 12))
    save(tmp_path / "big.png", random_rgb(30, 20))
    src = open_source(tmp_path)
    assert src.load([0]).shape == (1, 30, 20, 3)
    with pytest.raises(DataSourceError, match=r"differ in size.*big.png is 30×20.*small.png is 10×12"):
        src.load([0, 1])
    fixed = open_source(tmp_path, image_size=(16, 16))
    assert fixed.load([0, 1]).shape == (2, 16, 16, 3)


def test_folder_warnings_and_corrupt_files_surface_on_load(tmp_path):
    save(tmp_path / "grey.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "zbroken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    src = open_source(tmp_path)
    with pytest.warns(UserWarning, match="grey.png: greyscale"):
        assert src.load([0]).shape == (1, 4, 4, 3)
    with pytest.raises(ImageReadError, match="zbroken.png"):
        src.load([1])


def test_single_image_file(tmp_path):
    path = save(tmp_path / "one.png", random_rgb(5, 7))
    src = open_source(path)
    assert len(src) == 1 and src.load([0]).shape == (1, 5, 7, 3)
    assert_reopens(src)


# ------------------------------------------------------------------ the bundled sample


def test_sample_reads_skimage_photos():
    src = open_source("sample", image_size=(32, 32))
    assert 1 <= len(src) <= len(SAMPLE_IMAGES)
    assert (src.labels() == -1).all() and src.class_names is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sample's photos are all plain RGB
        images = src.load(range(len(src)))
    assert images.shape == (len(src), 32, 32, 3) and images.dtype == np.uint8
    assert images.std() > 10  # real photographs, not blank frames
    assert src.keys([0]) == ["astronaut.png"]
    record = src.describe()
    assert record["kind"] == "sample" and record["spec"] == "sample" and "skimage_version" in record
    with pytest.raises(DataSourceError, match="differ in size"):
        open_source("sample").load([0, 1])  # astronaut 512×512, chelsea 300×451


# ------------------------------------------------------------------ errors and indices


def test_unknown_paths_and_layouts(tmp_path):
    with pytest.raises(DataSourceError, match="no such file or folder"):
        open_source(tmp_path / "nowhere")
    (tmp_path / "data.txt").write_text("1,2,3")
    with pytest.raises(DataSourceError, match="unknown dataset file"):
        open_source(tmp_path / "data.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="no image files"):
        open_source(tmp_path / "empty")
    save(tmp_path / "one.png", random_rgb(2, 2))
    with pytest.raises(DataSourceError, match="no splits"):
        open_source(f"{tmp_path / 'one.png'}:train")
    with pytest.raises(UsageError, match="image size"):
        open_source("sample", image_size=(0, 3))


def test_indices_out_of_range(tmp_path):
    save(tmp_path / "a.png", random_rgb(2, 2))
    src = open_source(tmp_path)
    with pytest.raises(IndexError, match="outside 0..0"):
        src.load([1])
    with pytest.raises(IndexError):
        src.load([-1])
    assert src.load([]).shape[0] == 0


def test_select_indices_rules():
    y = np.array([2, 0, 1, 2, 0, -1, 1, 2, 0])
    assert select_indices(y).tolist() == list(range(9))
    assert select_indices(y, classes=[2, 0]).tolist() == [0, 1, 3, 4, 7, 8]
    assert select_indices(y, per_class=2).tolist() == [1, 4, 2, 6, 0, 3]
    assert select_indices(y, classes=[2, 0], per_class=1).tolist() == [0, 1]  # in the order asked
    assert select_indices(y, per_class=2, limit=3).tolist() == [1, 4, 2]
    assert select_indices(y, limit=0).tolist() == []
    with pytest.raises(UsageError, match="needs labels"):
        select_indices(np.full(4, -1), per_class=1)
    with pytest.raises(UsageError, match="≥ 0"):
        select_indices(y, limit=-1)


def test_resolve_classes():
    assert resolve_classes("cat, 1,truck", CIFAR10_CLASSES) == [3, 1, 9]
    assert resolve_classes([0, "dog"], CIFAR10_CLASSES) == [0, 5]
    with pytest.raises(UsageError, match="unknown class 'cow'"):
        resolve_classes("cow", CIFAR10_CLASSES)
    with pytest.raises(UsageError, match="out of range"):
        resolve_classes("10", CIFAR10_CLASSES)
    with pytest.raises(UsageError, match="no class names"):
        resolve_classes("cat", None)


def test_iter_batches_reports_progress(tmp_path):
    for i in range(5):
        save(tmp_path / f"{i}.png", random_rgb(3, 3, seed=i))
    src = open_source(tmp_path)
    calls = []
    got = list(iter_batches(src, [4, 0, 2], 2, on_progress=lambda d, t: calls.append((d, t))))
    assert [c.tolist() for c, _ in got] == [[4, 0], [2]]
    np.testing.assert_array_equal(got[0][1][0], random_rgb(3, 3, seed=4))
    assert calls == [(0, 3), (2, 3), (3, 3)]
