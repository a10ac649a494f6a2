"""Differentiable image operations shared by the defenses and attacks.

`kernel_filter` filters every pixel with its own predicted K×K kernel (AdvFilter's per-channel
kernels, Pasadena's shared ones); `kernel_filter_reference` is its defining unfold formula.
"""

from advkit.ops._kernel_filter import KernelFilter, kernel_filter, kernel_filter_reference

__all__ = ["KernelFilter", "kernel_filter", "kernel_filter_reference"]
