"""Training losses of the AdvFilter paper (Sec. 3.1) and PA-Filt's fusion stage (Sec. 4.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advkit.errors import UsageError


class FeatureExtractor(nn.Module):
    """φ_l: the output of one named layer of a classifier (a forward hook on ``classifier.net``).

    ``forward(images)``: [0, 1] images → the layer's activations. The classifier is frozen.
    """

    def __init__(self, classifier: nn.Module, layer: str) -> None:
        super().__init__()
        self.classifier = classifier
        self.layer = layer
        net = getattr(classifier, "net", classifier)
        try:
            module = net.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in net.named_children()]
            raise UsageError(
                f"{getattr(classifier, 'name', 'the classifier')} has no layer {layer!r}; top-level layers: "
                f"{', '.join(names)} (nested names like layer3.2 work too)"
            ) from None
        self._module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        # The hook lives only for this call, so extractors never pile up on a shared classifier.
        handle = self._module.register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            self.classifier(images)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"layer {self.layer!r} was not reached in the forward pass")
        return captured[-1]


def image_loss(denoised: torch.Tensor, clean: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L_img = ‖I − Ĩ‖₁ (mean absolute error over pixels); ``reduction="none"`` gives one value per image (B,)."""
    if reduction == "none":
        return (denoised - clean).abs().flatten(1).mean(1)
    return F.l1_loss(denoised, clean)


class SemanticLoss(nn.Module):
    """L_sem = ‖φ_l(I) − φ_l(Ĩ)‖₁ (mean over activations) at a classifier layer."""

    def __init__(self, classifier: nn.Module, layer: str) -> None:
        super().__init__()
        self.features = FeatureExtractor(classifier, layer)

    def forward(self, denoised: torch.Tensor, clean: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The loss (a scalar), or with ``reduction="none"`` one value per image (B,)."""
        with torch.no_grad():
            target = self.features(clean)
        diff = (self.features(denoised) - target).abs()
        return diff.flatten(1).mean(1) if reduction == "none" else diff.mean()


class RadiusBalancer:
    """Weights each image's loss by 1 / (running mean loss at its radius), so every radius counts alike.

    With the AdvFilter grid (1e-4 … 5e-1) the per-image losses differ by orders of magnitude across
    radii: a plain mean is dominated by the largest radii and the denoiser neglects the median ones
    (the "dip" the paper's PA-Filt addresses). Balancing is an advkit training option
    (``--radius-weighting balanced``), not the paper's recipe. The running means (an exponential
    moving average per radius, updated from each batch after it is weighted) are part of the resume
    state, so a resumed run continues exactly.
    """

    def __init__(self, momentum: float = 0.98) -> None:
        self.momentum = momentum
        self.running: dict[float, float] = {}

    def __call__(self, per_image: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """per_image: (B,) losses; eps: (B,) radii → the weighted scalar loss (≈ 1 once warmed up)."""
        keys = [round(float(e), 8) for e in eps.detach().cpu().tolist()]
        detached = per_image.detach().float().cpu()
        batch_means: dict[float, float] = {}
        for key in set(keys):
            mask = torch.tensor([k == key for k in keys])
            batch_means[key] = float(detached[mask].mean())
        scale = torch.tensor([self.running.get(k, batch_means[k]) for k in keys], dtype=per_image.dtype,
                             device=per_image.device).clamp_min(1e-12)
        loss = (per_image / scale).mean()
        for key, value in batch_means.items():
            old = self.running.get(key)
            self.running[key] = value if old is None else self.momentum * old + (1 - self.momentum) * value
        return loss

    def state_dict(self) -> dict[str, float]:
        return {repr(k): v for k, v in self.running.items()}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.running = {float(k): float(v) for k, v in state.items()}


def fusion_loss(classifier: nn.Module, denoised: torch.Tensor, clean: torch.Tensor,
                reduction: str = "mean") -> torch.Tensor:
    """PA-Filt stage 2: cross-entropy of the classifier on Ĩ against its own prediction on I.

    ``reduction="none"`` gives one value per image (B,).
    """
    with torch.no_grad():
        target = classifier(clean).argmax(1)
    return F.cross_entropy(classifier(denoised), target, reduction=reduction)
