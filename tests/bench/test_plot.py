from __future__ import annotations

import numpy as np
from PIL import Image

from advkit.bench.plot import PALETTE, _style, line_plot


def test_series_beyond_the_palette_get_another_marker():
    styles = [_style(i) for i in range(3 * len(PALETTE))]
    assert len(set(styles)) == len(styles)  # 30 series, no two alike
    assert _style(0)[0] == _style(len(PALETTE))[0] and _style(0)[1] != _style(len(PALETTE))[1]


def test_line_plot_draws_each_series(tmp_path):
    series = {f"s{i}": ([0.1 * (i + 1), 0.1 * (i + 2)], [0.5, 0.6]) for i in range(12)}
    path = tmp_path / "p.png"
    line_plot(series, path, title="t", xlabel="x", ylabel="y", logx=False)
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in pixels}
    assert all(tuple(c) in colours for c in PALETTE)
