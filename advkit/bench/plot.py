"""Small PNG plots drawn with Pillow (no plotting dependency): line plots with a log x axis and
labelled scatter plots, enough for the bench's accuracy-vs-eps and success-vs-SSIM figures."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

from advkit.utils import atomic_path

PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
WIDTH, HEIGHT = 900, 560
LEFT, RIGHT, TOP, BOTTOM = 70, 190, 40, 60


def _style(i: int) -> tuple[tuple[int, int, int], int]:
    """Series i's colour and marker shape: after the ten colours the shapes change, so no two of
    up to 30 series look alike."""
    return PALETTE[i % len(PALETTE)], (i // len(PALETTE)) % 3


def _marker(draw: ImageDraw.ImageDraw, u: float, v: float, r: float, color: tuple[int, int, int], shape: int) -> None:
    """A circle (0), square (1) or triangle (2) of radius r centred at (u, v)."""
    if shape == 1:
        draw.rectangle([u - r, v - r, u + r, v + r], fill=color)
    elif shape == 2:
        draw.polygon([(u, v - r - 1), (u - r - 1, v + r), (u + r + 1, v + r)], fill=color)
    else:
        draw.ellipse([u - r, v - r, u + r, v + r], fill=color)


class _Axes:
    """Maps data coordinates to pixels inside the plot frame."""

    def __init__(self, xlim: tuple[float, float], ylim: tuple[float, float], logx: bool) -> None:
        self.logx = logx
        self.x0, self.x1 = (math.log10(xlim[0]), math.log10(xlim[1])) if logx else xlim
        self.y0, self.y1 = ylim
        if self.x1 == self.x0:
            self.x0, self.x1 = self.x0 - 0.5, self.x1 + 0.5
        if self.y1 == self.y0:
            self.y0, self.y1 = self.y0 - 0.5, self.y1 + 0.5

    def px(self, x: float, y: float) -> tuple[float, float]:
        xv = math.log10(x) if self.logx else x
        u = LEFT + (xv - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)
        v = HEIGHT - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)
        return u, v


def _frame(draw: ImageDraw.ImageDraw, axes: _Axes, title: str, xlabel: str, ylabel: str) -> None:
    font = ImageFont.load_default()
    draw.rectangle([LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM], outline=(0, 0, 0))
    draw.text((LEFT, 12), title, fill=(0, 0, 0), font=font)
    draw.text(((WIDTH - RIGHT + LEFT) // 2 - 3 * len(xlabel), HEIGHT - 22), xlabel, fill=(0, 0, 0), font=font)
    draw.text((6, TOP - 18), ylabel, fill=(0, 0, 0), font=font)
    # y ticks: 5 even steps
    for i in range(6):
        y = axes.y0 + (axes.y1 - axes.y0) * i / 5
        _, v = axes.px(10**axes.x0 if axes.logx else axes.x0, y)
        draw.line([LEFT - 4, v, LEFT, v], fill=(0, 0, 0))
        draw.line([LEFT, v, WIDTH - RIGHT, v], fill=(225, 225, 225))
        draw.text((8, v - 6), f"{y:.2f}", fill=(0, 0, 0), font=font)
    # x ticks: decades on a log axis, 5 even steps otherwise
    if axes.logx:
        ticks = [10.0**k for k in range(math.floor(axes.x0), math.ceil(axes.x1) + 1)]
        ticks = [t for t in ticks if axes.x0 - 1e-9 <= math.log10(t) <= axes.x1 + 1e-9]
    else:
        ticks = [axes.x0 + (axes.x1 - axes.x0) * i / 5 for i in range(6)]
    for t in ticks:
        u, _ = axes.px(t, axes.y0)
        draw.line([u, HEIGHT - BOTTOM, u, HEIGHT - BOTTOM + 4], fill=(0, 0, 0))
        draw.line([u, TOP, u, HEIGHT - BOTTOM], fill=(235, 235, 235))
        draw.text((u - 12, HEIGHT - BOTTOM + 8), f"{t:.0e}" if axes.logx else f"{t:.2f}", fill=(0, 0, 0), font=font)


def _legend(draw: ImageDraw.ImageDraw, names: Sequence[str]) -> None:
    font = ImageFont.load_default()
    for i, name in enumerate(names):
        color, shape = _style(i)
        y = TOP + 6 + 16 * i
        _marker(draw, WIDTH - RIGHT + 17, y + 6, 5, color, shape)
        draw.text((WIDTH - RIGHT + 28, y), name[:26], fill=(0, 0, 0), font=font)


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = True,
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> None:
    """Write a PNG with one polyline (+ markers) per series; x values ≤ 0 are left out on a log axis."""
    points = {
        name: [(x, y) for x, y in zip(xs, ys) if y is not None and (x > 0 or not logx)]
        for name, (xs, ys) in series.items()
    }
    xs_all = [x for pts in points.values() for x, _ in pts] or [1.0]
    ys_all = [y for pts in points.values() for _, y in pts] or [0.0]
    axes = _Axes((min(xs_all), max(xs_all)), ylim or (min(ys_all), max(ys_all)), logx)
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    _frame(draw, axes, title, xlabel, ylabel)
    for i, pts in enumerate(points.values()):
        color, shape = _style(i)
        pix = [axes.px(x, y) for x, y in sorted(pts)]
        if len(pix) > 1:
            draw.line(pix, fill=color, width=2)
        for u, v in pix:
            _marker(draw, u, v, 3 if shape == 0 else 4, color, shape)
    _legend(draw, list(points))
    _save(image, path)


def scatter_plot(
    points: Mapping[str, tuple[float, float]],
    path: str | os.PathLike[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> None:
    """Write a PNG with one labelled marker per named (x, y) point (linear axes, [0, 1] on y)."""
    xs = [x for x, _ in points.values()] or [0.0]
    pad = max(0.02, 0.05 * (max(xs) - min(xs)))
    axes = _Axes((min(xs) - pad, max(xs) + pad), (0.0, 1.0), logx=False)
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    _frame(draw, axes, title, xlabel, ylabel)
    font = ImageFont.load_default()
    for i, (name, (x, y)) in enumerate(points.items()):
        color, shape = _style(i)
        u, v = axes.px(x, y)
        _marker(draw, u, v, 5, color, shape)
        draw.text((u + 7, v - 6), name, fill=color, font=font)
    _legend(draw, list(points))
    _save(image, path)


def _save(image: Image.Image, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
