"""Output and input paths users hand over: empty names, collisions, the input as its own output,
names too long for the filesystem, a folder named like a file; each one line or the right files."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from advkit.cli import app
from advkit.data.images import read_image, write_png

runner = CliRunner()


def _one_line_error(result, needle=""):
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert "internal error" not in lines[0]


@pytest.fixture()
def photos(tmp_path):
    """A folder with a.png, a.jpg (same stem) and b.png."""
    g = torch.Generator().manual_seed(0)
    folder = tmp_path / "in"
    for name in ("a.png", "a.jpg", "b.png"):
        write_png(folder / "tmp.png", torch.rand(3, 20, 24, generator=g))
        if name.endswith(".jpg"):
            from PIL import Image

            Image.open(folder / "tmp.png").convert("RGB").save(folder / name, quality=95)
            (folder / "tmp.png").unlink()
        else:
            (folder / "tmp.png").rename(folder / name)
    return folder


def test_an_empty_argument_is_refused(photos, tmp_path, monkeypatch):
    """Path("") is the current folder: `defend "" out` denoised the whole working folder and
    `defend a.png ""` wrote ./a.png."""
    monkeypatch.chdir(tmp_path)
    for args in (["defend", "", "o.png"], ["defend", str(photos / "a.png"), ""]):
        result = runner.invoke(app, ["-q", *args])
        _one_line_error(result, 'an empty argument ("")')
        assert result.exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_inputs_that_meet_in_one_output_name_keep_their_own(photos, tmp_path):
    """a.jpg and a.png both went to a.png, the last one winning, with "images": 3 reported."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["-q", "defend", str(photos), str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.png", "a.png", "b.png"]
    assert not torch.equal(read_image(out / "a.png"), read_image(out / "a.jpg.png"))
    (photos / "a.jpg.png").write_bytes((photos / "b.png").read_bytes())  # now a.jpg's new name is taken too
    _one_line_error(runner.invoke(app, ["-q", "defend", str(photos), str(tmp_path / "out2")]), "two inputs")
    assert not (tmp_path / "out2").exists()


def test_an_unreadable_image_in_a_folder_says_how_far_it_got(photos, tmp_path):
    (photos / "a1.png").write_bytes(b"not a png")  # sorted second: a.jpg, a.png, a1.png, b.png
    out = tmp_path / "out"
    result = runner.invoke(app, ["-q", "defend", str(photos), str(out)])
    _one_line_error(result, "stopped at image 3 of 4; 2 written to")
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.png", "a.png"]
    # without -q, failing before any progress: the bar has not started, so no empty line comes
    # before the error (there was one)
    (photos / "0.png").write_bytes(b"not a png")
    result = runner.invoke(app, ["defend", str(photos), str(tmp_path / "out2")])
    _one_line_error(result, "stopped at image 1 of 5; 0 written to")
    assert not (tmp_path / "out2").exists()


def test_the_input_is_never_its_own_output(photos):
    before = (photos / "b.png").read_bytes()
    _one_line_error(runner.invoke(app, ["-q", "defend", str(photos / "b.png"), str(photos / "b.png")]), "is the input")
    _one_line_error(runner.invoke(app, ["-q", "defend", str(photos), str(photos)]), "is the input")
    assert (photos / "b.png").read_bytes() == before
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg", "a.png", "b.png"]


def test_folder_outputs(photos, tmp_path):
    # a folder's output named like a file is refused (it made a folder called x.png)
    _one_line_error(runner.invoke(app, ["-q", "defend", str(photos), str(tmp_path / "x.png")]), "give an output folder")
    _one_line_error(runner.invoke(app, ["-q", "defend", "sample", str(tmp_path / "s.png")]), "give an output folder")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "s.png").exists()
    # a name ending in / is a folder, made if missing (it was refused as "name the output *.png")
    result = runner.invoke(app, ["-q", "defend", str(photos / "b.png"), str(tmp_path / "new") + "/"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "b.png").is_file()


def test_uncertainty_map_checks_come_before_any_write(photos, tmp_path):
    pafilt = ["--denoiser", "advfilter-cifar10-pafilt"]
    out = tmp_path / "o.png"
    same = runner.invoke(app, ["-q", "defend", str(photos / "b.png"), str(out), *pafilt, "--save-uncertainty", str(out)])
    _one_line_error(same, "is the denoised image's output too")
    (tmp_path / "blocker").write_bytes(b"")
    blocked = runner.invoke(app, ["-q", "defend", str(photos / "b.png"), str(out), *pafilt,
                                  "--save-uncertainty", str(tmp_path / "blocker" / "w.png")])
    _one_line_error(blocked, "blocker is not a folder")
    assert not out.exists()


def test_a_name_too_long_for_the_filesystem_is_one_line(photos, tmp_path):
    long = "a" * 300
    _one_line_error(runner.invoke(app, ["-q", "defend", str(photos), str(tmp_path / long)]), "File name too long")
    _one_line_error(runner.invoke(app, ["-q", "defend", str(photos / "b.png"), str(tmp_path / long / "o.png")]),
                    "File name too long")


def test_sample_is_the_bundled_photos_and_dot_sample_a_folder(photos, tmp_path, monkeypatch):
    """As for every --data: the word names the bundled photos even beside a folder of that name
    (defend used the folder instead), ./sample the folder."""
    import json
    from pathlib import Path

    from advkit.defenses.apply import names_bundled_sample

    assert names_bundled_sample("sample") and names_bundled_sample(" Sample ")
    assert not names_bundled_sample("./sample") and not names_bundled_sample(Path("sample"))
    monkeypatch.chdir(tmp_path)
    photos.rename(tmp_path / "sample")
    result = runner.invoke(app, ["-q", "--json", "defend", "./sample", "out"])
    assert result.exit_code == 0 and json.loads(result.stdout)["images"] == 3, result.output


def test_a_broken_symlink_in_a_folder_is_not_skipped_silently(photos, tmp_path):
    """defend listed a folder its own way and dropped broken symlinks without a word, where
    predict and gen-adv fail on them; all read a folder through one scanner now."""
    (photos / "c.png").symlink_to(tmp_path / "gone.png")
    result = runner.invoke(app, ["-q", "defend", str(photos), str(tmp_path / "out")])
    _one_line_error(result, "c.png")
    assert "stopped at image 4 of 4; 3 written" in result.stderr
