"""Training denoisers from pair stores: checkpoint/resume, determinism, DDP under torchrun.

The epoch order is a permutation drawn from a generator seeded by (seed, epoch), and the learning
rate a function of the global step, so a run resumed from ``last`` (saved every epoch and every
``save_every_s`` seconds mid-epoch) continues exactly where it stopped. Under ``torchrun`` every
rank takes every world-size-th sample of the permutation; rank 0 validates and writes checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from advkit.data.store import PairStore, radius_mask, reconstruct_adv
from advkit.defenses.evaluate import evaluate_on_store, store_rows
from advkit.errors import AdvkitError, CheckpointError, OutputExistsError, UsageError
from advkit.models.checkpoint import load_denoiser, save_denoiser
from advkit.models.denoisers import DENOISER_ARCHS, FUSION_INPUTS, MultiHeadFiltDenoiser, PAFilt, create_denoiser
from advkit.train.losses import FUSION_LOSSES, SemanticLoss, fusion_choice_loss, fusion_loss, image_loss
from advkit.utils import atomic_path, cleaned_up_on_failure

STATE_FILE = "train_state.pt"


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in every checkpoint's JSON)."""

    arch: str = "unet-filt"
    loss: str = "img"  # img | sem
    train: str = ""
    val: str | None = None
    out: str = "ckpt"
    model: str | None = None  # threat model (needed for loss=sem, pafilt fusion, val accuracy)
    weights: str | None = None
    feature_layer: str | None = None
    width: int = 16
    kernel_size: int = 5
    epochs: int = 10
    fusion_epochs: int = 2  # pafilt stage 2
    batch_size: int = 64
    lr: float = 1e-3
    fusion_lr: float = 1e-3
    fusion_loss: str = "ce"  # ce (the paper) | error (expected misclassification) | choice (which branch)
    fusion_input: str = "uncertainty"  # what PA-Filt's fusion net reads: uncertainty | uncertainty+image
    weight_decay: float = 0.0
    amp: str = "none"  # none | bf16
    seed: int = 0
    val_per_eps: int | None = 200
    save_every_s: float = 300.0
    train_eps: list[float] | None = None  # keep only these radii from the training store
    init: str | None = None  # start from this checkpoint's weights (same arch and shapes, or Filt → PA-Filt)
    freeze: list[str] | None = None  # parameter-name prefixes kept fixed in every stage
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.arch not in DENOISER_ARCHS:
            raise UsageError(f"unknown --arch {self.arch!r}; known: {', '.join(DENOISER_ARCHS)}")
        if self.loss not in ("img", "sem"):
            raise UsageError(f"--loss must be img or sem, got {self.loss!r}")
        if self.amp not in ("none", "bf16"):
            raise UsageError(f"--amp must be none or bf16, got {self.amp!r}")
        if self.loss == "sem" and not self.model:
            raise UsageError("--loss sem needs --model (the threat model whose features are matched)")
        if self.arch == "pafilt" and self.fusion_epochs > 0 and not self.model:
            raise UsageError("pafilt's fusion stage trains through the classifier: give --model")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1 and not (name == "epochs" and self.fusion_only):
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
        if self.fusion_loss not in FUSION_LOSSES:
            raise UsageError(f"--fusion-loss must be one of {', '.join(FUSION_LOSSES)}, got {self.fusion_loss!r}")
        if self.fusion_input not in FUSION_INPUTS:
            raise UsageError(f"--fusion-input must be one of {', '.join(FUSION_INPUTS)}, got {self.fusion_input!r}")
        if self.fusion_epochs < 0:
            raise UsageError("--fusion-epochs must be >= 0")
        if not self.lr > 0:
            raise UsageError("--lr must be > 0")
        if self.width < 1:
            raise UsageError(f"--width must be >= 1, got {self.width}")
        if not (1 <= self.kernel_size <= 15 and self.kernel_size % 2 == 1):
            raise UsageError(f"--kernel-size must be odd in 1..15 (the kernel-filter op's range), got {self.kernel_size}")

    @property
    def fusion_only(self) -> bool:
        """PA-Filt with ``--epochs 0 --init CKPT``: keep the given Y-Net, train only the fusion net."""
        return self.arch == "pafilt" and self.epochs == 0 and self.init is not None and self.fusion_epochs > 0

    @property
    def total_epochs(self) -> int:
        return self.epochs + (self.fusion_epochs if self.arch == "pafilt" else 0)


@dataclass
class EpochReport:
    epoch: int
    stage: str
    train_loss: float
    seconds: float
    val: dict[str, Any] | None = None


class _InMemoryPairs:
    """The done rows of a store in memory: uint8 clean and float16 delta, (N, H, W, 3) each."""

    def __init__(self, path: str, eps: list[float] | None) -> None:
        with PairStore(path) as store:
            keep = store.field("done")
            if eps is not None:
                keep &= radius_mask(store.field("eps"), eps, path)
            rows = np.flatnonzero(keep)
            if rows.size == 0:
                raise UsageError(f"{path}: no finished rows to train on (check --train-eps)")
            self.clean, self.delta = store.raw(rows)
            self.eps = store.field("eps")[rows]
            self.label = store.field("label")[rows]
            self.info = store.info

    def __len__(self) -> int:
        return len(self.eps)

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = np.sort(idx)
        clean_u8 = self.clean[idx]
        adv = reconstruct_adv(clean_u8, self.delta[idx]).to(device)
        clean = torch.from_numpy(clean_u8).to(device).permute(0, 3, 1, 2).float().div_(255)
        return adv, clean, torch.from_numpy(self.eps[idx]).to(device)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group if ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _dist_info()


def _lr_at(step: int, total: int, base: float) -> float:
    return base * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def train_denoiser(
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    classifier: nn.Module | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> dict[str, Any]:
    """Train the denoiser ``cfg`` describes; write ``best``/``last`` checkpoints to ``cfg.out``.

    Returns the training record (config, per-epoch history, best validation metrics). A run that
    fails before it saved anything leaves no empty ``cfg.out`` folder behind.
    """
    with cleaned_up_on_failure(cfg.out):
        return _train_denoiser(cfg, device=device, resume=resume, overwrite=overwrite, classifier=classifier,
                               on_progress=on_progress, on_epoch=on_epoch)


def _train_denoiser(
    cfg: TrainConfig,
    *,
    device: torch.device | str,
    resume: bool,
    overwrite: bool,
    classifier: nn.Module | None,
    on_progress: Callable[[int, int], None] | None,
    on_epoch: Callable[[EpochReport], None] | None,
) -> dict[str, Any]:
    cfg.validate()
    device = torch.device(device)
    rank, world = init_distributed(device)
    out = Path(cfg.out)
    state_path = out / STATE_FILE
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise OutputExistsError(f"{out} is not empty; use --resume to continue or --overwrite to start over")
    if resume and not state_path.is_file():
        raise CheckpointError(f"nothing to resume in {out}: no {STATE_FILE}")

    if classifier is None and cfg.model:
        from advkit.models import create_classifier

        classifier = create_classifier(cfg.model, cfg.weights)
    if classifier is not None:
        classifier = classifier.to(device).eval()
        for p in classifier.parameters():
            p.requires_grad_(False)
    data = _InMemoryPairs(cfg.train, cfg.train_eps)
    val_store = PairStore(cfg.val) if cfg.val else None

    torch.manual_seed(cfg.seed)
    arch_kwargs: dict[str, Any] = {"width": cfg.width}
    if cfg.arch != "unet-add":
        arch_kwargs["kernel_size"] = cfg.kernel_size
    if cfg.arch == "pafilt":
        arch_kwargs["fusion_input"] = cfg.fusion_input
    model = create_denoiser(cfg.arch, **arch_kwargs)
    model.to(device)

    sem_loss: SemanticLoss | None = None
    if cfg.loss == "sem":
        from advkit.models import get_model_spec

        layer = cfg.feature_layer or get_model_spec(cfg.model).feature_layers[-1]  # type: ignore[arg-type]
        cfg.feature_layer = layer
        sem_loss = SemanticLoss(classifier, layer)  # type: ignore[arg-type]

    def recon_loss(denoised: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return sem_loss(denoised, clean) if sem_loss is not None else image_loss(denoised, clean)

    n = len(data)
    steps_per_epoch = math.ceil(math.ceil(n / world) / cfg.batch_size)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch, start_step = 0, 0

    frozen = _frozen_names(model, cfg.freeze)

    def trained_in(stage: str) -> dict[str, nn.Parameter]:
        """What ``stage`` updates: PA-Filt's fusion stage only the fusion net, the denoiser stage the
        rest; never what ``--freeze`` names."""
        return {name: p for name, p in model.named_parameters()
                if name not in frozen and name.startswith("fusion.") == (stage == "fusion")}

    for stage_name, stage_epochs in (("denoiser", cfg.epochs), ("fusion", cfg.total_epochs - cfg.epochs)):
        if stage_epochs > 0 and not trained_in(stage_name):
            raise UsageError(f"--freeze leaves nothing to train in the {stage_name} stage")
    if isinstance(model, PAFilt) and cfg.epochs > 0:
        # With the shared encoder and the SL branch frozen, only rows at PA-Filt's M radii reach a
        # trainable weight; a batch of other rows would have no gradient at all.
        m_only = all(name.split(".")[0] in ("decoder_m", "head_m") for name in trained_in("denoiser"))
        radii = np.unique(data.eps)
        others = radii[~np.isin(radii, np.asarray(PAFilt.M_RADII, dtype=radii.dtype))].tolist()
        if m_only and others:
            raise UsageError(f"--freeze leaves only the M branch to train, which learns from the radii "
                             f"{', '.join(f'{e:g}' for e in PAFilt.M_RADII)} alone; the store also has "
                             f"{', '.join(f'{e:g}' for e in others[:4])}: add --train-eps "
                             f"{','.join(f'{e:g}' for e in PAFilt.M_RADII)}")

    def make_optimizer(stage: str) -> torch.optim.Optimizer:
        lr = cfg.fusion_lr if stage == "fusion" else cfg.lr
        return torch.optim.Adam(trained_in(stage).values(), lr=lr, weight_decay=cfg.weight_decay)

    stage_of = lambda epoch: "fusion" if cfg.arch == "pafilt" and epoch >= cfg.epochs else "denoiser"  # noqa: E731

    if resume:
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            saved_cfg = json.loads(state["config"])
        except Exception as exc:  # noqa: BLE001  (torch.load of a damaged file fails in many ways)
            from advkit.models.weights import describe_load_error

            raise CheckpointError(f"{state_path} is damaged, so the run cannot be resumed "
                                  f"({type(exc).__name__}: {describe_load_error(exc)}); start over with --overwrite") from exc
        ours = json.loads(json.dumps(asdict(cfg), default=str))
        defaults = asdict(TrainConfig())  # state saved before a field existed holds its default
        for key in ("arch", "loss", "train", "width", "kernel_size", "seed", "batch_size", "epochs",
                    "fusion_epochs", "fusion_loss", "fusion_input", "lr", "model", "feature_layer", "init", "freeze"):
            if key in ("feature_layer",) and ours.get(key) is None:
                continue
            saved = saved_cfg.get(key, defaults[key])
            if saved != ours.get(key):
                raise CheckpointError(
                    f"{out} was trained with {key}={saved!r}, not {ours.get(key)!r}; "
                    "resume with the same arguments"
                )
        resumed = load_denoiser(out / "last.safetensors", arch=cfg.arch)
        model.load_state_dict(resumed.state_dict())
        start_epoch, start_step = int(state["epoch"]), int(state["step"])
        history = json.loads(state["history"])
        best = json.loads(state["best"]) if state["best"] else None
    else:
        if cfg.init:
            _load_initial_weights(model, cfg.init, cfg.arch, keep_fusion=not cfg.fusion_only)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)

    def wrap(stage: str) -> nn.Module:
        """Freeze what the stage does not train; under torchrun, wrap in DDP for that stage."""
        trained = trained_in(stage)
        for name, p in model.named_parameters():
            p.requires_grad_(name in trained)
        if world == 1:
            return model
        return nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)

    stage = stage_of(start_epoch)
    ddp_model = wrap(stage)
    optimizer = make_optimizer(stage)
    if resume and state.get("optimizer_stage") == stage:
        optimizer.load_state_dict(state["optimizer"])

    def save_state(epoch: int, step: int, stage: str) -> None:
        if rank != 0:
            return
        record = {"train": asdict(cfg), "epoch": epoch, "step": step, "history": history, "best": best}
        save_denoiser(model, out / "last.safetensors", extra=record)
        payload = {
            "config": json.dumps(asdict(cfg), default=str),
            "epoch": epoch,
            "step": step,
            "history": json.dumps(history),
            "best": json.dumps(best) if best else "",
            "optimizer": optimizer.state_dict(),
            "optimizer_stage": stage,
        }
        with atomic_path(state_path, suffix=".pt.tmp") as tmp:
            torch.save(payload, tmp)

    total_steps_all = steps_per_epoch * cfg.total_epochs
    last_save = time.monotonic()
    for epoch in range(start_epoch, cfg.total_epochs):
        new_stage = stage_of(epoch)
        if new_stage != stage:
            stage, optimizer = new_stage, make_optimizer(new_stage)
            ddp_model = wrap(stage)
        stage_epochs = cfg.fusion_epochs if stage == "fusion" else cfg.epochs
        stage_epoch = epoch - (cfg.epochs if stage == "fusion" else 0)
        base_lr = cfg.fusion_lr if stage == "fusion" else cfg.lr
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g).numpy()[rank::world]
        model.train()
        if isinstance(model, PAFilt) and stage == "fusion":
            model.eval()  # the Y-Net is frozen (no dropout/BN here, but keep the intent explicit)
            model.fusion.train()
        t0 = time.monotonic()
        running, count = 0.0, 0
        first_step = start_step if epoch == start_epoch else 0
        for step in range(first_step, steps_per_epoch):
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if idx.size == 0:
                continue
            lr = _lr_at(stage_epoch * steps_per_epoch + step, stage_epochs * steps_per_epoch, base_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            adv, clean, eps = data.batch(idx, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
                loss = _batch_loss(ddp_model, model, stage, adv, clean, eps, recon_loss, classifier,
                                   cfg.fusion_loss)
            if not bool(torch.isfinite(loss.detach())):
                # One NaN step turns every weight NaN, and the run would save that as its best model.
                # (The pixels are finite: the store's reader refuses rows with non-finite deltas.)
                raise AdvkitError(f"training loss is {float(loss.detach()):g} at epoch {epoch + 1}, "
                                  f"step {step + 1}: lower --lr ({lr:g} at this step) or drop --amp")
            optimizer.zero_grad(set_to_none=True)
            loss.float().backward()
            optimizer.step()
            running += float(loss.detach()) * len(idx)
            count += len(idx)
            if on_progress and rank == 0:
                on_progress(epoch * steps_per_epoch + step + 1, total_steps_all)
            if time.monotonic() - last_save > cfg.save_every_s and step + 1 < steps_per_epoch:
                save_state(epoch, step + 1, stage)
                last_save = time.monotonic()
        train_loss = running / max(count, 1)
        report = EpochReport(epoch=epoch + 1, stage=stage, train_loss=train_loss, seconds=time.monotonic() - t0)
        if rank == 0:
            model.eval()
            if isinstance(model, MultiHeadFiltDenoiser) and val_store is not None and classifier is not None \
                    and epoch + 1 == cfg.total_epochs:
                model.default_head = _best_head(model, classifier, val_store, cfg, device)
            if val_store is not None:
                report.val = _validate(model, classifier, val_store, cfg, device)
            entry = {**asdict(report)}
            history.append(entry)
            score = _score(report)
            # A later stage supersedes an earlier one: PA-Filt's fusion epochs are never compared with
            # Y-Net epochs (another loss, and before stage 2 the fusion net is untrained).
            if best is None or best.get("stage", "denoiser") != stage or (
                    score is not None and score >= best["score"]):
                best = {"epoch": epoch + 1, "stage": stage, "score": score, "val": report.val}
                save_denoiser(model, out / "best.safetensors",
                              extra={"train": asdict(cfg), "epoch": epoch + 1, "val": report.val, "history": history})
            save_state(epoch + 1, 0, stage_of(epoch + 1) if epoch + 1 < cfg.total_epochs else stage)
            last_save = time.monotonic()
            if on_epoch:
                on_epoch(report)
        if world > 1:
            dist.barrier()
    if val_store is not None:
        val_store.close()
    return {"config": asdict(cfg), "history": history, "best": best, "out": str(out)}


def _frozen_names(model: nn.Module, prefixes: list[str] | None) -> set[str]:
    """Names of the parameters ``--freeze`` keeps fixed; a prefix that matches nothing is an error."""
    names = [name for name, _ in model.named_parameters()]
    frozen: set[str] = set()
    for prefix in prefixes or []:
        hits = {n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")}
        if not hits:
            tops = sorted({n.split(".")[0] for n in names})
            raise UsageError(f"--freeze {prefix!r} matches no parameter of this model; its parts: {', '.join(tops)}")
        frozen |= hits
    return frozen


# Filt → PA-Filt: the Filt U-Net becomes the shared encoder and both decoders/kernel heads.
_FILT_TO_PAFILT = {"encoder.": ("encoder.",), "decoder.": ("decoder_sl.", "decoder_m."),
                   "head.": ("head_sl.", "head_m.")}


def _load_initial_weights(model: nn.Module, path: str, arch: str, keep_fusion: bool = True) -> None:
    """``--init``: copy a checkpoint's weights into ``model``.

    Same architecture and shapes, or a ``unet-filt`` checkpoint into ``pafilt`` (of the same width
    and K): its encoder becomes the Y-Net's encoder and its decoder and kernel head initialise both
    branches; the fusion net keeps its fresh initialisation. With ``keep_fusion=False`` (PA-Filt's
    fusion-only runs) a PA-Filt checkpoint gives only its Y-Net: the fusion net trains from scratch
    (continuing a fusion run is what ``--resume`` is for).
    """
    source = load_denoiser(path)
    theirs, ours = source.state_dict(), model.state_dict()
    if source.arch == "unet-filt" and arch == "pafilt":
        for key in ("groups", "padding", "full_res_skip"):
            want = 3 if key == "groups" else model.config[key]
            if source.config.get(key) != want:
                raise CheckpointError(f"--init {path}: a Filt with {key}={source.config.get(key)!r} cannot start a "
                                      f"PA-Filt ({key}={want!r})")
        mapped = {}
        for key, value in theirs.items():
            prefix = next((p for p in _FILT_TO_PAFILT if key.startswith(p)), None)
            if prefix is None:
                raise CheckpointError(f"--init {path}: unexpected Filt parameter {key}")
            for target in _FILT_TO_PAFILT[prefix]:
                mapped[target + key[len(prefix):]] = value
        theirs = mapped
    elif source.arch != arch:
        raise CheckpointError(f"--init {path} is a {source.arch} checkpoint; {arch} starts only from {arch}"
                              + (" or unet-filt" if arch == "pafilt" else ""))
    if arch == "pafilt" and (source.arch != "pafilt" or not keep_fusion):
        theirs = {**theirs, **{k: v for k, v in ours.items() if k.startswith("fusion.")}}  # a fresh fusion net
    mismatched = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape]
    if mismatched or set(theirs) - set(ours):
        raise CheckpointError(f"--init {path}: its weights do not fit this {arch} (width/kernel size differ: "
                              f"{(mismatched or sorted(set(theirs) - set(ours)))[0]})")
    model.load_state_dict(theirs)


def _batch_loss(
    ddp_model: nn.Module,
    model: nn.Module,
    stage: str,
    adv: torch.Tensor,
    clean: torch.Tensor,
    eps: torch.Tensor,
    recon_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    classifier: nn.Module | None,
    kind: str = "ce",
) -> torch.Tensor:
    if isinstance(model, PAFilt):
        parts = ddp_model(adv, clamp=False, return_all=True)
        if stage == "fusion" and kind == "choice":
            return fusion_choice_loss(classifier, parts["sl"], parts["m"], parts["weight"], clean)  # type: ignore[arg-type]
        if stage == "fusion":
            return fusion_loss(classifier, parts["out"], clean, kind)  # type: ignore[arg-type]
        loss = recon_loss(parts["sl"], clean)
        is_m = torch.isin(eps, torch.tensor(PAFilt.M_RADII, dtype=eps.dtype, device=eps.device))
        if is_m.any():
            loss = loss + recon_loss(parts["m"][is_m], clean[is_m]) * (is_m.float().mean())
        return loss
    if isinstance(model, MultiHeadFiltDenoiser):
        return recon_loss(ddp_model(adv, eps=eps, clamp=False), clean)
    return recon_loss(ddp_model(adv, clamp=False), clean)


@torch.no_grad()
def _validate(model: nn.Module, classifier: nn.Module | None, store: PairStore, cfg: TrainConfig,
              device: torch.device) -> dict[str, Any]:
    rows = store_rows(store, cfg.val_per_eps)
    if classifier is None:
        psnrs = []
        for start in range(0, len(rows), 256):
            clean, adv = store.images(rows[start : start + 256])
            from advkit.metrics import psnr

            psnrs.append(psnr(model(adv.to(device)).clamp(0, 1), clean.to(device)).clamp(max=100).cpu())
        return {"psnr": float(torch.cat(psnrs).mean())}
    result = evaluate_on_store(model, classifier, store, rows=rows, device=device, include_clean=True)
    per = result["per_eps"]
    adv_rows = [r for r in per if r["eps"] > 0]
    return {
        "acc_defended_mean": float(np.mean([r.get("acc_defended", 0.0) for r in adv_rows])),
        "acc_clean_defended": next((r.get("acc_defended") for r in per if r["eps"] == 0), None),
        "psnr": float(np.mean([r["psnr_defended"] for r in adv_rows])),
        "per_eps": per,
    }


def _score(report: EpochReport) -> float | None:
    if report.val is None:
        return -report.train_loss
    if "acc_defended_mean" in report.val:
        return report.val["acc_defended_mean"]
    return report.val["psnr"]


@torch.no_grad()
def _best_head(model: MultiHeadFiltDenoiser, classifier: nn.Module, store: PairStore, cfg: TrainConfig,
               device: torch.device) -> int:
    rows = store_rows(store, cfg.val_per_eps)
    scores = []
    for h in range(len(model.heads)):
        res = evaluate_on_store(lambda x, h=h: model(x, head=h), classifier, store, rows=rows, device=device,
                                include_clean=True)
        scores.append(np.mean([r.get("acc_defended", 0.0) for r in res["per_eps"]]))
    return int(np.argmax(scores))
