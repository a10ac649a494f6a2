"""The Triton kernels: under the interpreter on CPU here, and on a real GPU where there is one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from advkit.ops import KernelFilter, kernel_filter, kernel_filter_reference

REPO = Path(__file__).resolve().parents[2]

# (batch, channels, H, W, K, G, padding, dtype, channels_last). 4×8 tiles (the interpreter's
# config) on 7×9 images exercise partial tiles in both directions; C = 5 exercises two channel blocks.
# The interpreter's time grows with the number of programs, so two cases (one per memory format)
# carry the batch index arithmetic and the rest run one image.
INTERPRETED_CASES = [
    (2, 3, 7, 9, 3, 3, "zeros", "float32", False),
    (1, 3, 7, 9, 3, 3, "reflect", "float32", False),
    (1, 3, 7, 9, 3, 3, "replicate", "float32", False),
    (1, 3, 7, 9, 5, 3, "reflect", "float32", True),
    (1, 3, 7, 9, 3, 1, "replicate", "float32", False),
    (1, 3, 7, 9, 5, 1, "zeros", "float32", True),
    (1, 3, 5, 6, 1, 3, "zeros", "float32", False),
    (1, 5, 7, 9, 3, 1, "reflect", "bfloat16", False),
    (2, 5, 7, 9, 3, 5, "replicate", "bfloat16", True),
]

_INTERPRETER_SCRIPT = """
import json, os, sys
assert "triton" not in sys.modules
os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton
import torch
from advkit.ops import _triton_path, kernel_filter_reference

errors = []
for batch, channels, height, width, size, groups, padding, dtype, channels_last in json.loads(sys.argv[1]):
    dtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    taps = size * size
    images = torch.rand(batch, channels, height, width, generator=gen, dtype=torch.float64)
    kernels = torch.randn(batch, groups, taps, height, width, generator=gen, dtype=torch.float64)
    kernels = kernels.softmax(dim=2).reshape(batch, groups * taps, height, width)
    grad_out = torch.randn(batch, channels, height, width, generator=gen, dtype=torch.float64)
    # The reference sees the inputs rounded to dtype, computed in float64.
    images, kernels, grad_out = (t.to(dtype).double() for t in (images, kernels, grad_out))
    x, k = images.clone().requires_grad_(), kernels.clone().requires_grad_()
    expected = kernel_filter_reference(x, k, padding)
    expected_grads = torch.autograd.grad(expected, (x, k), grad_out)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images, kernels, grad_out = (t.to(dtype).contiguous(memory_format=fmt) for t in (images, kernels, grad_out))
    got = (
        _triton_path.forward(images, kernels, padding),
        _triton_path.grad_images(grad_out, kernels, padding),
        _triton_path.grad_kernels(grad_out, images, padding, groups * taps),
    )
    row = []
    for name, value, reference in zip(("out", "grad_images", "grad_kernels"), got, (expected, *expected_grads)):
        assert value.dtype == dtype and value.shape == reference.shape, (name, value.dtype, value.shape)
        row.append([name, (value.double() - reference).abs().max().item(), reference.abs().max().item()])
    errors.append(row)
print(json.dumps({"errors": errors, "triton": sys.modules["triton"].__version__}))
"""


def test_triton_kernels_under_the_interpreter():
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_INTERPRETER_SCRIPT), json.dumps(INTERPRETED_CASES)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["errors"]) == len(INTERPRETED_CASES)
    for case, row in zip(INTERPRETED_CASES, report["errors"]):
        for name, error, scale in row:
            # float32: summation order only. bfloat16: one rounding of the float32-accumulated result.
            tolerance = 1e-5 if case[7] == "float32" else 2 ** -8 * max(scale, 1.0)
            assert error <= tolerance, (case, name, error, scale)


# ---- real GPU ---------------------------------------------------------------------------------

CUDA_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _cuda_inputs(batch, channels, height, width, size, groups, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    images = torch.rand(batch, channels, height, width, generator=gen, device="cuda", dtype=torch.float64)
    logits = torch.randn(batch, groups, size * size, height, width, generator=gen, device="cuda", dtype=torch.float64)
    kernels = logits.softmax(dim=2).reshape(batch, groups * size * size, height, width)
    return images.to(dtype), kernels.to(dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize("size", [1, 3, 5, 7, 15])
@pytest.mark.parametrize("per_channel", [True, False])
def test_cuda_matches_unfold_formula_with_gradients(per_channel, size, padding, dtype):
    images, kernels = _cuda_inputs(2, 3, 37, 45, size, 3 if per_channel else 1, dtype)
    grad_out = torch.randn(images.shape, device="cuda", dtype=torch.float64).to(dtype)
    results = []
    for fn, cast in ((kernel_filter, dtype), (kernel_filter_reference, torch.float64)):
        x = images.to(cast).requires_grad_()
        k = kernels.to(cast).requires_grad_()
        out = fn(x, k, padding)
        results.append((out, *torch.autograd.grad(out, (x, k), grad_out.to(cast))))
    for got, expected in zip(*results):
        assert got.dtype == dtype
        scale = max(expected.abs().max().item(), 1.0)
        torch.testing.assert_close(got.double(), expected, atol=CUDA_TOLERANCE[dtype] * scale, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate"])
def test_cuda_channels_last_and_views(padding):
    images, kernels = _cuda_inputs(4, 3, 64, 80, 5, 3, torch.float32)
    expected = kernel_filter_reference(images, kernels, padding)
    fmt = torch.channels_last
    out = kernel_filter(images.contiguous(memory_format=fmt), kernels.contiguous(memory_format=fmt), padding)
    assert out.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    wide = torch.zeros(8, 3, 64, 160, device="cuda")
    wide[::2, :, :, ::2] = images
    torch.testing.assert_close(kernel_filter(wide[::2, :, :, ::2], kernels, padding), expected, atol=1e-5, rtol=0)


@pytest.mark.cuda
def test_cuda_float64_gradcheck_and_opcheck():
    images, kernels = _cuda_inputs(2, 3, 5, 6, 3, 3, torch.float64)
    images.requires_grad_()
    kernels.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, k: kernel_filter(x, k, "reflect"), (images, kernels))
    for dtype in (torch.float32, torch.bfloat16):
        x, k = _cuda_inputs(2, 3, 9, 11, 3, 1, dtype)
        torch.library.opcheck(torch.ops.advkit.kernel_filter.default, (x.requires_grad_(), k.requires_grad_(), "zeros"))


@pytest.mark.cuda
def test_cuda_torch_compile_fullgraph():
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 75, 3, padding=1)).cuda()
    kf = KernelFilter("reflect")

    def run(images):
        batch, _, height, width = images.shape
        kernels = model(images).view(batch, 3, 25, height, width).softmax(2).view(batch, 75, height, width)
        return kf(images, kernels)

    images = torch.rand(2, 3, 32, 32, device="cuda")
    compiled = torch.compile(run, fullgraph=True)
    x1, x2 = images.clone().requires_grad_(), images.clone().requires_grad_()
    out_eager, out_compiled = run(x1), compiled(x2)
    torch.testing.assert_close(out_compiled, out_eager, atol=1e-5, rtol=1e-5)
    out_eager.sum().backward()
    out_compiled.sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=1e-5)
