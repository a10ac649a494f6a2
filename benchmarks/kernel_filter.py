"""Time and memory of ``advkit.ops.kernel_filter`` against the unfold formula, in one run.

    python -m benchmarks.kernel_filter --device cuda --dtype fp32,bf16 --json kf.json
    python -m benchmarks.kernel_filter --device cpu --dtype fp32 --cases b16_224_k5

For every case and dtype it measures the forward (no grad) and the forward+backward (gradients in
both arguments) of ``kernel_filter`` ("ours") and ``kernel_filter_reference`` ("unfold"): median
wall time over ``--repeat`` runs (the JSON has the minimum too), and the peak memory the step needs
beyond its inputs.

Memory. CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocation before the step.
CPU: a fresh process per (case, dtype, method), started with ``MALLOC_MMAP_THRESHOLD_=65536`` so
that every freed tensor goes back to the OS at once; it runs the step once to warm up, resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``), runs the step again and reports
``VmHWM − VmRSS before the step``. (tracemalloc does not see torch's allocations.) Linux only.
"Overhead" is the peak minus the outputs and gradients the step returns, i.e. pure scratch.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from advkit.ops import kernel_filter, kernel_filter_reference

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "ours": kernel_filter,
    "unfold": kernel_filter_reference,
}


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    channels: int
    size: int  # H = W
    kernel_size: int
    groups: int


CASES = {
    case.name: case
    for case in (
        Case("b16_224_k5", 16, 3, 224, 5, 3),
        Case("b64_32_k5", 64, 3, 32, 5, 3),
        Case("b4_512_k5", 4, 3, 512, 5, 3),
        Case("b16_224_k3", 16, 3, 224, 3, 3),
        Case("b16_224_k5_shared", 16, 3, 224, 5, 1),
    )
}


def make_inputs(case: Case, dtype: torch.dtype, device: torch.device):
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (case.batch, case.channels, case.size, case.size)
    images = torch.rand(shape, generator=gen, device=device, dtype=dtype)
    kernels = torch.rand(
        (case.batch, case.groups * case.kernel_size**2, case.size, case.size),
        generator=gen,
        device=device,
        dtype=dtype,
    )
    kernels /= case.kernel_size**2
    grad = torch.rand(shape, generator=gen, device=device, dtype=dtype)
    return images, kernels, grad


def make_step(method: str, case: Case, dtype: torch.dtype, device: torch.device, backward: bool):
    """A closure running one forward (or forward+backward) and the bytes of what it returns."""
    fn = METHODS[method]
    images, kernels, grad = make_inputs(case, dtype, device)
    if backward:
        images.requires_grad_()
        kernels.requires_grad_()
        returned = images.nbytes * 2 + kernels.nbytes  # output, grad_images, grad_kernels

        def step():
            out = fn(images, kernels)
            return torch.autograd.grad(out, (images, kernels), grad)

    else:
        returned = images.nbytes

        def step():
            with torch.no_grad():
                return fn(images, kernels)

    return step, returned


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def peak_extra_bytes(step: Callable[[], object]) -> int:
    """Peak resident memory that ``step()`` adds, beyond what is allocated before it (Linux, CPU).

    Run the process with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave the process
    immediately and the resident size follows live tensors.
    """
    step()  # lazy initialisations and thread pools are not the step's memory
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = _proc_status_bytes("VmRSS")
    step()
    return _proc_status_bytes("VmHWM") - before


def cpu_peak_in_fresh_process(method: str, case: Case, dtype: str, backward: bool) -> int:
    cmd = [sys.executable, "-m", "benchmarks.kernel_filter", "--memory-worker",
           f"{method},{case.name},{dtype},{int(backward)}"]  # fmt: skip
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def _time_once_ms(step: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        inner = 10  # back-to-back calls between two events, so launch gaps count as they would
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            step()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / inner
    t0 = time.perf_counter()
    step()
    return (time.perf_counter() - t0) * 1e3


def time_interleaved_ms(
    steps: dict[str, Callable[[], object]], device: torch.device, repeat: int
) -> dict[str, tuple[float, float]]:
    """(median, min) milliseconds per call of each step, the steps taking turns run by run so
    that both see the same machine (other processes on a shared CPU, GPU clocks)."""
    for step in steps.values():
        for _ in range(3):
            step()  # warm-up (Triton compiles and autotunes here)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeat):
        for name, step in steps.items():
            times[name].append(_time_once_ms(step, device))
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def cuda_peak_extra_bytes(step: Callable[[], object]) -> int:
    step()
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del result
    return peak


@dataclass
class Row:
    case: str
    dtype: str
    method: str
    mode: str  # "fwd" or "fwd+bwd"
    ms: float  # median
    ms_min: float
    peak_extra_mb: float | None
    overhead_mb: float | None  # peak minus the returned outputs and gradients


def measure(case: Case, dtype: str, device: torch.device, repeat: int, memory: bool) -> list[Row]:
    rows = []
    for backward in (False, True):
        mode = "fwd+bwd" if backward else "fwd"
        made = {m: make_step(m, case, DTYPES[dtype], device, backward) for m in METHODS}
        timings = time_interleaved_ms({m: step for m, (step, _) in made.items()}, device, repeat)
        peaks: dict[str, int | None] = dict.fromkeys(METHODS)
        if memory and device.type == "cuda":
            peaks = {m: cuda_peak_extra_bytes(step) for m, (step, _) in made.items()}
        returned = {m: nbytes for m, (_, nbytes) in made.items()}
        del made
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        elif memory:
            peaks = {m: cpu_peak_in_fresh_process(m, case, dtype, backward) for m in METHODS}
        for m in METHODS:
            peak = peaks[m]
            rows.append(
                Row(
                    case.name,
                    dtype,
                    m,
                    mode,
                    *timings[m],
                    None if peak is None else peak / 2**20,
                    None if peak is None else (peak - returned[m]) / 2**20,
                )
            )
    return rows


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[Row], device_name: str) -> None:
    digits = 3 if "cuda" in device_name.lower() or "nvidia" in device_name.lower() else 1
    header = (
        f"{'case':<18} {'dtype':<5} {'mode':<8} {'ours ms':>9} {'unfold ms':>10} {'ratio':>6} "
        f"{'ours MiB':>9} {'unfold MiB':>11} {'ratio':>6} {'ours ovh':>9}"
    )
    print(f"device: {device_name}")
    print(header)
    print("-" * len(header))
    by_key = {(r.case, r.dtype, r.mode, r.method): r for r in rows}
    for r in rows:
        if r.method != "ours":
            continue
        u = by_key[(r.case, r.dtype, r.mode, "unfold")]
        mem_ratio = (
            None if r.peak_extra_mb is None or not u.peak_extra_mb else r.peak_extra_mb / u.peak_extra_mb
        )
        print(
            f"{r.case:<18} {r.dtype:<5} {r.mode:<8} {r.ms:>9.{digits}f} {u.ms:>10.{digits}f} "
            f"{r.ms / u.ms:>6.2f} {_fmt(r.peak_extra_mb):>9} {_fmt(u.peak_extra_mb):>11} "
            f"{_fmt(mem_ratio, 2):>6} {_fmt(r.overhead_mb):>9}"
        )


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--dtype", default=None, help="comma list of fp32,bf16,fp16 (default: fp32,bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per measurement (default 50 on CUDA, 10 on CPU)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.memory_worker:
        method, case_name, dtype, backward = args.memory_worker.split(",")
        step, _ = make_step(method, CASES[case_name], DTYPES[dtype], torch.device("cpu"), backward == "1")
        print(peak_extra_bytes(step))
        return

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    dtypes = (args.dtype or ("fp32,bf16" if device.type == "cuda" else "fp32")).split(",")
    repeat = args.repeat or (50 if device.type == "cuda" else 10)
    unknown = [c for c in args.cases.split(",") if c not in CASES] + [d for d in dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"unknown case or dtype: {', '.join(unknown)}")

    rows: list[Row] = []
    for name in args.cases.split(","):
        for dtype in dtypes:
            rows += measure(CASES[name], dtype, device, repeat, not args.no_memory)
    name = device_description(device)
    print_table(rows, name)
    if args.json:
        meta = {"device": name, "torch": torch.__version__, "repeat": repeat, "threads": torch.get_num_threads()}
        with open(args.json, "w") as f:
            json.dump({**meta, "results": [asdict(r) for r in rows]}, f, indent=2)


if __name__ == "__main__":
    main()
