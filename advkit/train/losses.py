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


def image_loss(denoised: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """L_img = ‖I − Ĩ‖₁ (mean absolute error over pixels)."""
    return F.l1_loss(denoised, clean)


class SemanticLoss(nn.Module):
    """L_sem = ‖φ_l(I) − φ_l(Ĩ)‖₁ (mean over activations) at a classifier layer."""

    def __init__(self, classifier: nn.Module, layer: str) -> None:
        super().__init__()
        self.features = FeatureExtractor(classifier, layer)

    def forward(self, denoised: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.features(clean)
        return F.l1_loss(self.features(denoised), target)


def fusion_loss(classifier: nn.Module, denoised: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """PA-Filt stage 2: cross-entropy of the classifier on Ĩ against its own prediction on I."""
    with torch.no_grad():
        target = classifier(clean).argmax(1)
    return F.cross_entropy(classifier(denoised), target)
