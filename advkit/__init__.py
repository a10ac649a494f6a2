"""advkit: adversarial robustness research on images.

The library works on float image tensors in [0, 1], NCHW, RGB. Classifiers from the registry
normalize inside, so attacks, defenses and metrics never see normalized tensors.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
