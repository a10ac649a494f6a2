"""The attack base class: attacks are plain ``nn.Module``s called as ``attack(images, labels)``."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advkit.precision import check_precision, precision_scope
from advkit.utils import check_value_range, floating_dtype


def as_eps_tensor(eps: float | torch.Tensor, batch: int, like: torch.Tensor, upper: float = 1.0) -> torch.Tensor:
    """eps as a float32 (B, 1, 1, 1) tensor on ``like``'s device; a scalar is broadcast to the batch.
    Every value must lie in [0, ``upper``] (1 for L∞ radii on the [0, 1] scale)."""
    if isinstance(eps, (str, bytes)) or not isinstance(eps, (numbers.Real, torch.Tensor)):
        raise ValueError(f"eps must be a number or a tensor of radii, got {eps!r}")
    t = torch.as_tensor(eps, dtype=torch.float32, device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"eps must be a scalar or shape ({batch},), got {tuple(t.shape)}")
    if batch and not bool(((t >= 0) & (t <= upper)).all()):  # also catches NaN
        raise ValueError(f"eps must lie in [0, {upper:g}] on the [0, 1] pixel scale (8/255, not 8), got "
                         f"{', '.join(f'{v:g}' for v in t.unique()[:4].tolist())}")
    return t.view(batch, 1, 1, 1)


def check_counts(**counts: int) -> None:
    """`ValueError` naming the first of ``counts`` (steps, restarts, queries, ...) below 1."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            # PGD(model, 8/255, 2/255, 10), torchattacks' positional order, puts alpha here
            raise ValueError(f"{name} must be an integer >= 1, got {value!r} (pass options by keyword)")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def check_positive(**values: float | None) -> None:
    """`ValueError` naming the first of ``values`` (step sizes, ...) that is not a finite number > 0;
    None (the attack's own default) passes."""
    for name, value in values.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be > 0, got {value}")


def project_linf(x: torch.Tensor, x0: torch.Tensor, eps_t: torch.Tensor) -> torch.Tensor:
    """``x`` clipped to the L∞ ball of radius ``eps_t`` (B, 1, 1, 1) around ``x0`` and to [0, 1]."""
    return torch.minimum(torch.maximum(x, x0 - eps_t), x0 + eps_t).clamp(0, 1)


def unit_linf(t: torch.Tensor) -> torch.Tensor:
    """``t`` scaled so each image's largest absolute value is 1 (a point on the unit L∞ sphere)."""
    return t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def per_sample_l2(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1) L2 norm of each sample of ``x`` (B, ...)."""
    return x.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (x.ndim - 1)))


def unit_l2(x: torch.Tensor) -> torch.Tensor:
    """Each sample of ``x`` scaled to L2 norm 1 (all-zero samples stay 0).

    No small constant in the denominator: a confident image's gradient norm can be 1e-12 or less,
    and torchattacks' ``+ 1e-10`` then shortens its step (a difference the PGDL2 cross-check shows).
    """
    norm = per_sample_l2(x)
    return torch.where(norm > 0, x / norm, torch.zeros_like(x))


def to_unit_sphere(t: torch.Tensor, norm: str) -> torch.Tensor:
    """Each sample of ``t`` scaled onto the unit sphere of ``norm`` (``l2`` or ``linf``)."""
    return unit_l2(t) if norm == "l2" else unit_linf(t)


def draw_on_unit_sphere(shape: torch.Size | tuple[int, ...], norm: str, generator: torch.Generator) -> torch.Tensor:
    """Random points (CPU, from ``generator``) on the unit sphere of ``norm``, one per sample, as
    AutoAttack's random starts: L∞ a uniform draw scaled to max |·| = 1, L2 a Gaussian one scaled
    to norm 1."""
    draw = torch.randn(shape, generator=generator) if norm == "l2" else torch.rand(shape, generator=generator) * 2 - 1
    return to_unit_sphere(draw, norm)


def project_l2(x: torch.Tensor, x0: torch.Tensor, eps_t: torch.Tensor) -> torch.Tensor:
    """``x`` pulled into the L2 ball of radius ``eps_t`` (B, 1, 1, 1) around ``x0`` (along x − x0),
    then clipped to [0, 1]."""
    delta = x - x0
    norm = per_sample_l2(delta)
    scale = torch.where(norm > eps_t, eps_t / norm, torch.ones_like(norm))  # norm > 0 where it is used
    return (x0 + delta * scale).clamp(0, 1)


class DeviceGenerators:
    """One ``torch.Generator`` per device, each seeded with ``seed`` at its first use, so an attack
    draws its noise on the images' device and two attacks built with the same seed draw alike."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def __call__(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def reseed(self, seed: int) -> None:
        """Start over from ``seed`` on every device (the next draws are those of a fresh instance)."""
        self.seed = seed
        self._generators.clear()


def _autograd_usable(value: Any) -> Any:
    """``value``, or a copy where it is a tensor made under ``torch.inference_mode`` (autograd
    refuses those)."""
    return value.clone() if isinstance(value, torch.Tensor) and value.is_inference() else value


def _describe_output(out: Any) -> str:
    """What a model returned instead of (B, classes) logits, with how to wrap it."""
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} (wrap the model so it returns the logits alone, e.g. its first output)"
    if isinstance(out, Mapping):  # (also Hugging Face's ModelOutput)
        return f"a {type(out).__name__} (wrap the model so it returns the logits tensor, e.g. out['logits'])"
    if not isinstance(out, torch.Tensor):
        return f"a {type(out).__name__}"
    if out.ndim == 2 and out.shape[1] < 2:
        return (f"shape {tuple(out.shape)} (a binary classifier with one logit z can return "
                "torch.cat([-z, z], 1) / 2, whose softmax is its sigmoid)")
    return f"shape {tuple(out.shape)}"


# Peers' names for options advkit spells otherwise (torchattacks, ART, Foolbox).
_PEER_OPTION_NAMES = {
    "alpha": "step= (absolute) or rel_step= (a fraction of eps)",
    "eps_step": "step= (absolute) or rel_step= (a fraction of eps)",
    "abs_stepsize": "step=", "rel_stepsize": "rel_step=",
    "max_iter": "steps=", "nb_iter": "steps=", "iterations": "steps=", "n_iter": "steps=",
    "n_queries": "queries=", "max_queries": "queries=",
    "random_init": "random_start=", "rand_init": "random_start=",
    "n_restarts": "restarts=", "num_random_init": "restarts=",
    "n_classes": "nothing: the class count comes from the model's logits",
}


def _unknown_option_message(cls: type, name: str) -> str:
    options = [p for c in cls.__mro__ if c is not nn.Module and issubclass(c, Attack) and "__init__" in vars(c)
               for p in inspect.signature(vars(c)["__init__"]).parameters
               if p not in ("self", "model", "kwargs", "unknown")]
    known = ", ".join(dict.fromkeys(options))
    hint = f" (advkit's name for it: {_PEER_OPTION_NAMES[name]})" if name in _PEER_OPTION_NAMES else ""
    if name == "eps" and "eps" not in options:
        hint = " (a radius goes to the call: attack(images, labels, eps=...))"
    return f"{cls.__name__} has no option {name!r}{hint}; its options: {known}"


def check_images(images: torch.Tensor) -> None:
    """A float (B, C, H, W) tensor with values in [0, 1]; else a `ValueError` naming what is wrong."""
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3) and min(images.shape[1:3]) >= 8:
        # (else the model fails on its first convolution, about channels it did not expect)
        raise ValueError(f"images of shape {tuple(images.shape)} look channels-last (B, H, W, C); attacks take "
                         "(B, C, H, W): pass images.permute(0, 3, 1, 2)")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
    check_value_range(images)


class Attack(nn.Module):
    """Base of advkit's attacks.

    Args:
        model: classifier over [0, 1] NCHW images returning logits.
        precision: ``fp32`` (strict), ``tf32`` or ``bf16`` for the model's forward/backward.
        channels_last: run the model on channels_last tensors (faster convolutions on GPUs).
        targeted: the labels given to ``forward`` are target classes, and the attack descends their
            cross-entropy instead of ascending the true class's (torchattacks' targeted mode, ART's
            ``targeted=True``); see `advkit.attacks.targets` for random or least-likely targets.
        eot_samples: Expectation over Transformation (Athalye et al., 2018): each gradient is the
            mean over this many forward/backward passes, for a model with a randomized defense in
            it (a fresh draw each pass); 1 (default) is the plain gradient. Only attacks with
            ``supports_eot`` take more than 1 (the gradient attacks: FGSM, TI-FGSM, PGD, PGD-L2,
            APGD, APGD-T).

    ``forward(images, labels)``: images (B, C, H, W) float in [0, 1], labels (B,) int64 (None:
    the model's own predictions; a targeted attack needs them) → adversarial images, same shape, in
    [0, 1]. Called as ``attack(images, labels)``, the model runs in eval mode (batch norm on its
    running statistics, dropout off, as in torchattacks and ART) and gets its modes back after.
    """

    name = "attack"
    eps: float | None = None  # the default L∞ radius of the attacks that have one
    supports_targeted = True  # False where the objective is not a class's cross-entropy
    max_eps = 1.0  # the largest radius that means anything: L∞ on [0, 1] images
    supports_eot = False  # True where every gradient goes through `expected_gradient`
    threat_norms: tuple[str, ...] = ("linf",)  # the norms the attack works in (its ball, or its distance)
    black_box = False  # True where only the model's outputs are used (no gradient)
    minimum_norm = False  # True where the attack seeks the smallest adversarial perturbation
    min_classes = 2  # the fewest classes its loss is defined for (DLR: 3, targeted DLR: 4)

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: str = "fp32",
        channels_last: bool = False,
        targeted: bool = False,
        eot_samples: int = 1,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise TypeError(_unknown_option_message(type(self), next(iter(unknown))))
        check_counts(eot_samples=eot_samples)
        if eot_samples > 1 and not self.supports_eot:
            raise ValueError(f"{self.name} takes no eot_samples (EOT is for the gradient attacks: FGSM, TI-FGSM, "
                             "PGD, PGD-L2, APGD, APGD-T)")
        self.model = model
        self.precision = check_precision(precision)
        self.channels_last = channels_last
        self.targeted = bool(targeted)
        self.eot_samples = int(eot_samples)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass's default radius is checked once its whole constructor has run (an L2 attack
        # sets its norm, which lifts the bound, after its eps): `PGD(model, eps=8)` fails where it
        # is written, not at the first call.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def checked_init(self: Attack, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            if type(self).__init__ is checked_init and self.eps is not None:  # (the outermost constructor)
                # (a (B,) tensor of radii is a default for batches of B: its values are checked here)
                per_sample = isinstance(self.eps, torch.Tensor) and self.eps.ndim == 1
                as_eps_tensor(self.eps, self.eps.numel() if per_sample else 1, torch.empty(0), self.max_eps)

        cls.__init__ = checked_init  # type: ignore[method-assign]

    @property
    def targeted(self) -> bool:
        """Whether the attack drives images to the given labels as targets (else away from them)."""
        # (an attack pickled before `targeted` was a property holds it in its __dict__)
        return self.__dict__.get("_targeted", self.__dict__.get("targeted", False))

    @targeted.setter
    def targeted(self, value: bool) -> None:
        if value and not self.supports_targeted:  # (also when set after construction)
            raise ValueError(f"{self.name} has no targeted mode")
        self._targeted = bool(value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # As torchattacks and ART do, the model runs in eval mode for the attack: batch norm on its
        # running statistics (in train mode every forward of the attack would update them, and the
        # result would depend on the batch), dropout off. Each module's own mode comes back after.
        model = self.model
        in_training = [m for m in model.modules() if m.training] if isinstance(model, nn.Module) else []
        if in_training:
            model.eval()
        try:
            # Evaluation loops often run under no_grad or inference_mode; the gradient attacks need
            # autograd whatever the caller's mode (torchattacks fails there), and an inference
            # tensor can take no part in it, so such inputs are copied once.
            with torch.inference_mode(False), torch.enable_grad():
                args = tuple(_autograd_usable(a) for a in args)
                kwargs = {k: _autograd_usable(v) for k, v in kwargs.items()}
                return super().__call__(*args, **kwargs)
        finally:
            for module in in_training:
                module.training = True

    def sample_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B,) loss each image ascends: CE of the true label, or −CE of the target."""
        loss = F.cross_entropy(logits, labels, reduction="none")
        return -loss if self.targeted else loss

    def attack_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The summed loss every step ascends: `sample_loss` over the batch."""
        return self.sample_loss(logits, labels).sum()

    def succeeded(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the prediction left the true label, or reached the target."""
        hit = logits.argmax(1) == labels
        return hit if self.targeted else ~hit

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The model's fp32 logits for ``images`` computed in the attack's precision.

        The model gets the images in its own floating dtype (a ``.double()`` or ``.half()`` model
        takes float64 or float16 images; gradients flow back through the cast), while the attack
        keeps its iterates in float32."""
        dtype = floating_dtype(self.model)
        if dtype is not None and dtype != images.dtype:
            images = images.to(dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with precision_scope(self.precision, images.device):
            out = self.model(images)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] < 2:
            raise ValueError(f"the model must return (B, classes) logits with at least 2 classes, got "
                             f"{_describe_output(out)}")
        return out.float()

    def input_gradient(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇_x of `attack_loss`, logits) for a detached ``images`` batch (EOT means with
        ``eot_samples`` > 1, see `expected_gradient`)."""
        grad, _, logits = self.expected_gradient(images, labels)
        return grad, logits

    def expected_gradient(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(∇_x of the summed `sample_loss`, (B,) per-image loss, logits) at detached ``images``,
        each the mean over ``eot_samples`` forward/backward passes.

        With a deterministic model every pass is the same and the mean is the plain gradient; with
        a randomized one (fresh noise, masks or transforms each call) it estimates the gradient of
        the expected loss, which is what an attack on the defense in deployment has to ascend. One
        pass at a time, so memory stays that of a single pass. The logits' mean decides early stops
        and best iterates: an image counts as fooled when the expected logits are.
        """
        grad_sum = loss_sum = logits_sum = None
        for _ in range(self.eot_samples):
            x = images.detach().requires_grad_(True)
            logits = self.logits(x)
            loss = self.sample_loss(logits, labels)
            (grad,) = torch.autograd.grad(loss.sum(), x)
            if grad_sum is None:
                grad_sum, loss_sum, logits_sum = grad, loss.detach(), logits.detach()
            else:
                grad_sum, loss_sum, logits_sum = grad_sum + grad, loss_sum + loss.detach(), logits_sum + logits.detach()
        n = self.eot_samples
        return grad_sum / n, loss_sum / n, logits_sum / n  # type: ignore[operator]

    def set_norm(self, norm: str) -> None:
        """Keep ``norm`` (one of the class's `threat_norms`) as ``self.norm``, else `ValueError`.
        An L2 radius may exceed 1 (an image's L2 norm reaches √(C·H·W)), so L2 lifts ``max_eps``."""
        if norm not in self.threat_norms:
            raise ValueError(f"norm must be {' or '.join(repr(n) for n in self.threat_norms)}, got {norm!r}")
        self.norm = norm
        if norm == "l2":
            self.max_eps = math.inf

    def distance(self, delta: torch.Tensor) -> torch.Tensor:
        """(B,) the size of each sample of ``delta`` (B, ...) in the attack's ``norm`` (L2 or L∞)."""
        flat = delta.flatten(1)
        return flat.norm(dim=1) if self.norm == "l2" else flat.abs().amax(1)

    def forward_takes(self, keyword: str) -> bool:
        """Whether ``forward`` takes ``keyword``: ``eps`` (a radius; the minimum-norm attacks take
        none) or ``init`` (random starts given by the caller, as gen-adv's per-row draws)."""
        return keyword in inspect.signature(self.forward).parameters

    def reseed(self, seed: int) -> None:
        """Restart every random stream the attack and its sub-modules draw from (random starts,
        input diversity, variance samples, black-box proposals) from ``seed``.

        An attack's generators advance with each call, so its output depends on how many calls came
        before; a caller that needs a call's result to depend only on its own inputs (gen-adv's
        resumable batches) reseeds before it. The ``seed`` recorded in `config` stays the
        constructor's.
        """
        for module in self.modules():
            for value in vars(module).values():
                if isinstance(value, torch.Generator):
                    value.manual_seed(seed)
                elif isinstance(value, DeviceGenerators):
                    value.reseed(seed)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(1)

    def resolve_labels(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            if self.targeted:
                raise ValueError(f"targeted {self.name} needs target labels (see advkit.attacks.targets)")
            return self.predict(images)
        labels = torch.as_tensor(labels, device=images.device)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
        labels = labels.long()
        if labels.numel():
            # On CUDA an out-of-range class in cross_entropy is a device-side assert that poisons the
            # process, so check here, with the class count from one image's logits.
            with torch.no_grad():
                classes = self.logits(images[:1].detach().float()).shape[1]
            low, high = labels.min().item(), labels.max().item()
            if low < 0 or high >= classes:
                bad = low if low < 0 else high
                raise ValueError(f"labels must lie in [0, {classes}) for a model of {classes} classes, got {bad}")
        return labels

    def prepare(
        self, images: torch.Tensor, labels: torch.Tensor | None, eps: float | torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The checked start of every L∞ attack's ``forward``: (x0, labels, eps).

        x0, labels: as `prepare_batch`; eps: (B, 1, 1, 1) float32, ``self.eps`` where ``eps`` is None.
        """
        radius = self.eps if eps is None else eps
        if radius is None:
            raise ValueError(f"{self.name}: no eps given and the attack has no default radius")
        x0, labels = self.prepare_batch(images, labels)
        return x0, labels, as_eps_tensor(radius, x0.shape[0], x0, self.max_eps)

    def prepare_batch(self, images: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The checked start of every ``forward``: ``images`` detached as float32 (B, C, H, W) and
        (B,) int64 labels (the model's predictions where ``labels`` is None)."""
        check_images(images)
        x0 = images.detach().float()
        return x0, self.resolve_labels(x0, labels)

    def config(self) -> dict[str, Any]:
        """The attack's full configuration, as recorded in stores and results (JSON-able)."""
        config: dict[str, Any] = {"name": self.name, "precision": self.precision, "channels_last": self.channels_last}
        if self.supports_targeted:
            config["targeted"] = self.targeted
        if self.eot_samples > 1:  # absent: one pass per gradient, as in every store made before EOT
            config["eot_samples"] = self.eot_samples
        return config
