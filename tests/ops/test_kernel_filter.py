"""kernel_filter against its unfold definition, its gradients, its registration and its errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from advkit.ops import KernelFilter, kernel_filter, kernel_filter_reference

REPO = Path(__file__).resolve().parents[2]
PADDINGS = ("zeros", "reflect", "replicate")


@pytest.fixture(autouse=True)
def _one_thread():
    """These inputs are tiny: a second thread gains nothing and, on a busy 2-core machine, made
    gradgradcheck's thousands of small ops up to 15× slower (thread wake-ups under contention)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_inputs(batch, channels, height, width, size, groups, dtype=torch.float32, seed=0):
    """Images in [0, 1] and kernels that sum to 1 over each pixel's taps, like predicted kernels."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, channels, height, width, generator=gen, dtype=torch.float64)
    logits = torch.randn(batch, groups, size * size, height, width, generator=gen, dtype=torch.float64)
    kernels = logits.softmax(dim=2).reshape(batch, groups * size * size, height, width)
    return images.to(dtype), kernels.to(dtype)


def reference64(images, kernels, padding):
    return kernel_filter_reference(images.double(), kernels.double(), padding)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("size", [1, 3, 5, 7, 15])
@pytest.mark.parametrize("per_channel", [True, False])
def test_matches_unfold_formula(per_channel, size, padding):
    height, width = (9, 11) if size == 15 else (7, 9)
    images, kernels = make_inputs(2, 3, height, width, size, 3 if per_channel else 1)
    out = kernel_filter(images, kernels, padding)
    assert out.shape == images.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, kernel_filter_reference(images, kernels, padding), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.double(), reference64(images, kernels, padding), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "padding,height,width,size",
    [("zeros", 3, 2, 7), ("replicate", 2, 3, 7), ("replicate", 1, 1, 5), ("reflect", 4, 5, 7)],
)
def test_images_smaller_than_the_kernel(padding, height, width, size):
    images, kernels = make_inputs(2, 3, height, width, size, 3)
    torch.testing.assert_close(
        kernel_filter(images, kernels, padding), kernel_filter_reference(images, kernels, padding), atol=1e-5, rtol=0
    )


def test_known_values():
    """A kernel that picks the right neighbour shifts the image left; the border follows the padding."""
    images = torch.arange(1.0, 13.0).view(1, 1, 3, 4)
    kernels = torch.zeros(1, 9, 3, 4)
    kernels[:, 5] = 1.0  # tap (i=1, j=2) reads images[y, x + 1]
    expected_inside = images[..., 1:]
    for padding, edge in (("zeros", 0.0), ("replicate", images[..., -1:]), ("reflect", images[..., -2:-1])):
        out = kernel_filter(images, kernels, padding)
        torch.testing.assert_close(out[..., :-1], expected_inside)
        torch.testing.assert_close(out[..., -1:], torch.as_tensor(edge).expand_as(out[..., -1:]))


@pytest.mark.parametrize("padding", PADDINGS)
def test_non_contiguous_inputs(padding):
    images, kernels = make_inputs(3, 3, 9, 11, 5, 3)
    expected = kernel_filter_reference(images, kernels, padding)
    channels_last = kernel_filter(
        images.contiguous(memory_format=torch.channels_last),
        kernels.contiguous(memory_format=torch.channels_last),
        padding,
    )
    torch.testing.assert_close(channels_last, expected, atol=1e-5, rtol=0)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)

    wide_images = torch.zeros(3, 3, 9, 22)
    wide_images[..., ::2] = images
    wide_kernels = torch.zeros(6, 75, 9, 11)
    wide_kernels[::2] = kernels
    sliced = kernel_filter(wide_images[..., ::2], wide_kernels[::2], padding)
    torch.testing.assert_close(sliced, expected, atol=1e-5, rtol=0)

    # One shared kernel map broadcast over the batch (stride 0), as an attack might pass it.
    shared = kernels[:1, :25].expand(3, 25, 9, 11)
    torch.testing.assert_close(
        kernel_filter(images, shared, padding),
        kernel_filter_reference(images, shared.contiguous(), padding),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_accumulates_in_float32(dtype):
    images, kernels = make_inputs(2, 3, 7, 9, 7, 3)
    out = kernel_filter(images.to(dtype), kernels.to(dtype))
    assert out.dtype == dtype
    # Error of rounding inputs and output once each, not of 49 rounded partial sums.
    expected = reference64(images.to(dtype), kernels.to(dtype), "zeros")
    torch.testing.assert_close(out.double(), expected, atol=8e-3 if dtype == torch.bfloat16 else 1e-3, rtol=0)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("per_channel", [True, False])
def test_gradients_match_unfold_formula(per_channel, padding):
    images, kernels = make_inputs(2, 3, 7, 9, 5, 3 if per_channel else 1)
    weights = torch.randn(2, 3, 7, 9)
    grads = []
    for fn in (kernel_filter, kernel_filter_reference):
        x = images.clone().requires_grad_()
        k = kernels.clone().requires_grad_()
        (fn(x, k, padding) * weights).sum().backward()
        grads.append((x.grad, k.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("per_channel", [True, False])
def test_gradcheck_float64(per_channel, padding):
    images, kernels = make_inputs(1, 2, 4, 5, 3, 2 if per_channel else 1, dtype=torch.float64)
    images.requires_grad_()
    kernels.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, k: kernel_filter(x, k, padding), (images, kernels))
    # (second derivatives through the op's own backward ops; fast mode checks a random projection of
    # the full Jacobian, 2 s less per case)
    assert torch.autograd.gradgradcheck(lambda x, k: kernel_filter(x, k, padding), (images, kernels), fast_mode=True)


def test_gradient_of_one_argument_only():
    images, kernels = make_inputs(1, 3, 5, 5, 3, 1)
    x = images.clone().requires_grad_()
    kernel_filter(x, kernels).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    k = kernels.clone().requires_grad_()
    kernel_filter(images, k).sum().backward()
    assert k.grad is not None and k.grad.shape == k.shape


@pytest.mark.parametrize("padding", PADDINGS)
def test_opcheck(padding):
    images, kernels = make_inputs(2, 3, 5, 6, 3, 3)
    shared = make_inputs(2, 3, 5, 6, 3, 1)[1]
    samples = [
        (images, kernels, padding),
        (images.clone().requires_grad_(), kernels.clone().requires_grad_(), padding),
        (images.contiguous(memory_format=torch.channels_last), shared.requires_grad_(), padding),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.advkit.kernel_filter.default, args)
    grad_out = torch.randn(2, 3, 5, 6)
    torch.library.opcheck(
        torch.ops.advkit.kernel_filter_grad_images.default, (grad_out, kernels.requires_grad_(), padding)
    )
    torch.library.opcheck(
        torch.ops.advkit.kernel_filter_grad_kernels.default, (grad_out, images.requires_grad_(), padding, 27)
    )


class _TinyKernelPredictor(torch.nn.Module):
    """conv → softmax over taps → kernel_filter: the shape of AdvFilter's and Pasadena's use."""

    def __init__(self, channels=3, size=3, padding="reflect"):
        super().__init__()
        self.size = size
        self.conv = torch.nn.Conv2d(channels, channels * size * size, 3, padding=1)
        self.filter = KernelFilter(padding)

    def forward(self, images):
        batch, channels, height, width = images.shape
        logits = self.conv(images).view(batch, channels, self.size * self.size, height, width)
        kernels = logits.softmax(dim=2).view(batch, -1, height, width)
        return self.filter(images, kernels)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    model = _TinyKernelPredictor()
    images = torch.rand(2, 3, 8, 8)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    x_eager = images.clone().requires_grad_()
    x_compiled = images.clone().requires_grad_()
    out_eager = model(x_eager)
    out_compiled = compiled(x_compiled)
    torch.testing.assert_close(out_compiled, out_eager, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(out_eager)
    (out_eager * weights).sum().backward()
    (out_compiled * weights).sum().backward()
    torch.testing.assert_close(x_compiled.grad, x_eager.grad, atol=1e-5, rtol=1e-5)


def test_torch_compile_dynamic_shapes():
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x, k: kernel_filter(x, k, "reflect"), fullgraph=True, backend="aot_eager", dynamic=True
    )
    for batch, height, width, size in ((2, 8, 9, 3), (3, 10, 7, 5)):
        images, kernels = make_inputs(batch, 3, height, width, size, 3)
        kernels.requires_grad_()
        out = compiled(images, kernels)
        torch.testing.assert_close(out, kernel_filter_reference(images, kernels, "reflect"), atol=1e-5, rtol=0)
        out.sum().backward()
        assert kernels.grad.shape == kernels.shape


def test_module_matches_function():
    images, kernels = make_inputs(2, 3, 6, 7, 3, 1)
    module = KernelFilter("replicate")
    assert "replicate" in repr(module)
    torch.testing.assert_close(module(images, kernels), kernel_filter(images, kernels, "replicate"))
    with pytest.raises(ValueError, match="padding"):
        KernelFilter("circular")


@pytest.mark.parametrize(
    "images_shape,kernels_shape,match",
    [
        ((3, 8, 8), (1, 27, 8, 8), r"\(3, 8, 8\)"),
        ((1, 3, 8, 8), (27, 8, 8), r"\(27, 8, 8\)"),
        ((1, 3, 8, 8), (1, 26, 8, 8), r"got 26 .*\(1, 26, 8, 8\)"),
        ((1, 3, 8, 8), (1, 12, 8, 8), "must be odd.*K = 2"),
        ((1, 3, 8, 8), (1, 48, 8, 8), "must be odd.*K = 4"),
        ((1, 3, 20, 20), (1, 3 * 17 * 17, 20, 20), "at most 15.*K = 17"),
        ((2, 3, 8, 8), (1, 27, 8, 8), r"batch size.*\(2, 3, 8, 8\).*\(1, 27, 8, 8\)"),
        ((1, 3, 8, 8), (1, 27, 8, 9), r"H×W.*\(1, 27, 8, 9\)"),
    ],
)
def test_bad_shapes_raise_value_error_naming_them(images_shape, kernels_shape, match):
    with pytest.raises(ValueError, match=match):
        kernel_filter(torch.rand(images_shape), torch.rand(kernels_shape))


def test_dtype_device_padding_and_reflect_size_errors():
    images, kernels = make_inputs(1, 3, 8, 8, 3, 3)
    with pytest.raises(ValueError, match=r"dtype.*float64"):
        kernel_filter(images, kernels.double())
    with pytest.raises(ValueError, match="floating"):
        kernel_filter(images.long(), kernels.long())
    with pytest.raises(ValueError, match=r"device.*meta"):
        kernel_filter(images, kernels.to("meta"))
    with pytest.raises(ValueError, match="circular"):
        kernel_filter(images, kernels, "circular")
    small, small_kernels = make_inputs(1, 3, 3, 8, 7, 3)
    with pytest.raises(ValueError, match=r"reflect.*K // 2 = 3.*\(1, 3, 3, 8\)"):
        kernel_filter(small, small_kernels, "reflect")
    with pytest.raises(TypeError, match="must be tensors, got ndarray"):
        kernel_filter(images.numpy(), kernels)


def test_ambiguous_channel_count_reads_as_per_channel():
    """C = 9 with 9 kernel channels: a 1×1 kernel per channel, not one shared 3×3 kernel."""
    images = torch.rand(1, 9, 5, 5)
    kernels = torch.rand(1, 9, 5, 5)
    torch.testing.assert_close(kernel_filter(images, kernels), images * kernels)


def test_empty_batch():
    images, kernels = make_inputs(0, 3, 5, 5, 3, 3)
    assert kernel_filter(images, kernels).shape == (0, 3, 5, 5)


def _run_python(code: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_cpu_path_never_loads_the_triton_kernels():
    out = _run_python(
        """
        import sys, torch
        from advkit.ops import kernel_filter
        x = torch.rand(1, 3, 6, 6, requires_grad=True)
        kernel_filter(x, torch.rand(1, 27, 6, 6)).sum().backward()
        print("advkit.ops._triton_path" in sys.modules)
        """
    )
    assert out.strip() == "False"


def test_cpu_peak_memory_stays_far_below_the_unfolded_tensor():
    """Peak resident memory of one forward+backward, measured in a fresh process (see the benchmark)."""
    code = """
        import torch
        from benchmarks.kernel_filter import peak_extra_bytes
        from advkit.ops import kernel_filter
        torch.manual_seed(0)
        images = torch.rand(4, 3, 128, 128, requires_grad=True)
        kernels = torch.rand(4, 3 * 49, 128, 128, requires_grad=True)
        grad = torch.rand(4, 3, 128, 128)
        def step():
            kernel_filter(images, kernels).backward(grad)
            images.grad = kernels.grad = None
        print(peak_extra_bytes(step))
        """
    peak = int(_run_python(code, env={"MALLOC_MMAP_THRESHOLD_": "65536"}).strip())
    kernels_bytes = 4 * 3 * 49 * 128 * 128 * 4  # = the unfolded image = the kernel gradient
    # The kernel gradient itself is an output; everything else must be small beside it.
    assert kernels_bytes * 0.9 < peak < kernels_bytes * 1.25, peak
