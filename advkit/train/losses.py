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


FUSION_LOSSES = ("ce", "error", "choice")


def _clean_prediction(classifier: nn.Module, clean: torch.Tensor) -> torch.Tensor:
    """The fusion losses' label y: the classifier's own prediction on the clean image (B,)."""
    with torch.no_grad():
        return classifier(clean).argmax(1)


def _probability_of(classifier: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """p_y (B,): the classifier's probability of ``target`` on ``images`` clamped to [0, 1] as at inference."""
    return F.softmax(classifier(images.clamp(0, 1)), dim=1).gather(1, target[:, None])[:, 0]


def fusion_loss(classifier: nn.Module, denoised: torch.Tensor, clean: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """PA-Filt stage 2: the classifier on Ĩ against its own prediction on the clean image I.

    ``kind="ce"`` is the paper's cross-entropy on the unclamped Ĩ. ``kind="error"`` is the expected
    classification error, mean(1 − p_y), on Ĩ clamped to [0, 1] as at inference. Why it exists:
    cross-entropy is unbounded, and a branch that is confidently wrong on a few radii (measured: CE
    66 and 98 for φ_sl at eps 0.3 and 0.5, against ≤ 1.5 up to 1e-2) outweighs every other radius,
    so the fusion net learned W ≡ 0 even where φ_sl is right 3× as often. The bounded loss counts
    each image by how likely it is to be misclassified, which is what the accuracy tables measure.
    """
    target = _clean_prediction(classifier, clean)
    if kind == "ce":
        return F.cross_entropy(classifier(denoised), target)
    if kind == "error":
        return (1 - _probability_of(classifier, denoised, target)).mean()
    raise ValueError(f"fusion loss must be one of {', '.join(FUSION_LOSSES[:2])} here ('choice' needs the "
                     f"branches: fusion_choice_loss), got {kind!r}")


def fusion_choice_loss(
    classifier: nn.Module, sl: torch.Tensor, m: torch.Tensor, weight: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """PA-Filt stage 2, ``--fusion-loss choice``: teach W which branch the classifier gets right.

    Per image, the target is 1 where the classifier gives the clean prediction y a higher probability
    on the clamped Ĩ_sl than on Ĩ_m, else 0; the loss is the binary cross-entropy of every pixel of W
    against it, weighted by |p_y(Ĩ_sl) − p_y(Ĩ_m)| so images both branches get equally right or
    wrong do not count. Why: through the mixed image, any loss of p_y has no gradient where the
    dominant branch is confidently wrong (softmax saturation), so the bounded ``error`` loss never
    moved W off φ_sl at eps 0.3 and 0.5, where φ_sl is always wrong and φ_m right 17–29 % of the
    time; cross-entropy has the gradient but lets those radii outweigh all others.

    Shapes: sl, m, clean (B, 3, H, W); weight (B, 1, H, W) in (0, 1).
    """
    target = _clean_prediction(classifier, clean)
    with torch.no_grad():
        p_sl = _probability_of(classifier, sl, target)
        p_m = _probability_of(classifier, m, target)
        choose_sl = (p_sl >= p_m).to(weight.dtype)
        importance = (p_sl - p_m).abs()
    per_image = F.binary_cross_entropy(weight.clamp(1e-6, 1 - 1e-6),
                                       choose_sl[:, None, None, None].expand_as(weight),
                                       reduction="none").mean((1, 2, 3))
    return (importance * per_image).mean()
