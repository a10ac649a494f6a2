"""Adversarial pair generation: every selected image attacked at every radius, into a pair store.

Rows are image-major: row ``m · E + e`` holds image ``m`` of the selection at radius ``e``. A batch
mixes images and radii (the attacks take a per-sample eps). Each row's random start is drawn from
a generator seeded by (seed, row), so a row's content does not depend on which process, shard or
resumed run computes it; batch boundaries are fixed multiples of ``batch_size`` so a resumed run
repeats exactly the computation an uninterrupted one would have done. Attacks that also draw per
batch (DIM's transforms, VT's samples, Square's and SPSA's proposals, later restarts) are reseeded
from (seed, first row of the batch) before each batch, so a resumed run repeats those draws too
(their rows then depend on the batch size and shard split, which the store's config records).

The store is written as ``OUT.partial`` and renamed to ``OUT`` when every row is done, so ``OUT``
only ever names a complete store; a killed run leaves ``OUT.partial`` for ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advkit.attacks.base import Attack
from advkit.attacks.registry import attack_parameters, get_attack, list_attacks, parse_attack_options
from advkit.data.sources import labels_for_model
from advkit.data.store import PairStore, PairStoreWriter, config_difference, quantize_delta, reconstruct_adv
from advkit.errors import OutputError, OutputExistsError, StoreFormatError, UsageError
from advkit.models.classifier import strict_fp32_predictions
from advkit.utils import exclusive_run

ADVFILTER_EPS_GRID = (1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 5e-3, 1e-2, 3e-2, 5e-2, 1e-1, 3e-1, 5e-1)
EPS_GRIDS = {"advfilter": ADVFILTER_EPS_GRID}


def parse_radii(eps: str | None, eps_grid: str | None, default: str | None = None) -> list[float]:
    """The radii of ``--eps A,B,...`` or ``--eps-grid NAME`` (at most one; ``default`` when neither)."""
    from advkit.utils import parse_float_list

    if eps is not None and eps_grid is not None:
        raise UsageError("give only one of --eps and --eps-grid")
    if eps_grid is not None:
        if eps_grid not in EPS_GRIDS:
            raise UsageError(f"unknown --eps-grid {eps_grid!r}; known: {', '.join(EPS_GRIDS)}")
        return list(EPS_GRIDS[eps_grid])
    if eps is None and default is None:
        raise UsageError("give --eps or --eps-grid")
    return check_eps(parse_float_list(eps if eps is not None else default, "eps"))  # type: ignore[arg-type]


def check_eps(values: Sequence[float], *, what: str = "eps") -> list[float]:
    """Radii must lie in (0, 1]; duplicates are refused (they would make identical rows)."""
    out = [float(v) for v in values]
    if not out:
        raise UsageError(f"no {what} given")
    for v in out:
        if not (0.0 < v <= 1.0) or not np.isfinite(v):
            raise UsageError(f"{what} {v:g} is out of range: it must be in (0, 1] on the [0, 1] pixel scale")
    if len(set(out)) != len(out):
        raise UsageError(f"{what} list has duplicates: {out}")
    return out


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n; None → (0, 1)."""
    if not text:
        return 0, 1
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise UsageError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {text}: need 0 <= i < n")
    return i, n


def shard_bounds(images: int, shard: tuple[int, int]) -> tuple[int, int]:
    """The [start, stop) image positions of shard i of n (contiguous, sizes differ by ≤ 1)."""
    i, n = shard
    return images * i // n, images * (i + 1) // n


def row_generator_seed(seed: int, row: int) -> int:
    """A 63-bit seed for the random draws of global row ``row`` under ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def batch_generator_seed(seed: int, first_row: int) -> int:
    """A 63-bit seed for an attack's own draws in the batch starting at global row ``first_row``
    (a stream apart from the rows' random starts)."""
    digest = hashlib.blake2b(f"batch:{seed}:{first_row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# gen-adv names that are a registered attack with some options fixed.
GENERATION_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {"apgd-dlr": ("apgd", {"loss": "dlr"})}


# Constructor options gen-adv sets from its own flags.
GENERATION_FLAGS = {"seed": "--seed", "sigma": "--sigma"}


def generation_attacks() -> list[str]:
    """The attacks gen-adv runs: every registered L∞-ball attack (not the minimum-norm ones, whose
    output is not bounded by the row's radius), the aliases (``apgd-dlr``) and ``noise``."""
    bounded = [name for name in list_attacks(norm="linf") if not get_attack(name).minimum_norm]
    return sorted([*bounded, *GENERATION_ALIASES, "noise"])


def check_generation_attack(name: str) -> None:
    """`UsageError` unless gen-adv runs ``name``; for a registered attack it cannot run, say why."""
    if name in generation_attacks():
        return
    choices = ", ".join(generation_attacks())
    if name not in list_attacks():
        raise UsageError(f"unknown attack {name!r} for gen-adv; use one of: {choices}")
    spec = get_attack(name)
    if spec.minimum_norm:
        why = "it is a minimum-norm attack, whose perturbation no radius bounds"
    elif spec.threat_norms:
        why = f"it is an {'/'.join(n.upper() for n in spec.threat_norms)} attack and the store's radii are L∞"
    else:
        why = "it does not perturb within an L∞ radius"
    raise UsageError(f"gen-adv cannot run {name}: {why}; use one of: {choices}")


def build_generation_attack(
    name: str,
    model: torch.nn.Module | None,
    *,
    steps: int | None = None,
    rel_step: float | None = None,
    early_stop: bool | None = None,
    seed: int = 0,
    precision: str = "fp32",
    channels_last: bool = False,
    options: Sequence[str] = (),
) -> Attack:
    """The attack gen-adv runs as ``name`` (see `generation_attacks`), with its own defaults where
    an argument is None.

    Args:
        steps: iterations (the number of queries for ``square``); None: the attack's default
            (PGD 40, APGD 100, the MI-FGSM family 10, SPSA 100, Square 5000 queries).
        rel_step: PGD's step as a fraction of eps (PGD only).
        early_stop: stop attacking images once misclassified (attacks that have the option).
        seed: the attack's own generators (gen-adv reseeds them per batch, see `generate_pairs`).
        options: ``KEY=VALUE`` settings of the attack's constructor (`parse_attack_options`).

    `UsageError` for an unknown name, a flag the attack does not take, or a bad option value.
    """
    check_generation_attack(name)
    registered, fixed = GENERATION_ALIASES.get(name, (name, {}))
    params = attack_parameters(registered)
    kwargs: dict[str, Any] = dict(fixed)
    flags = {"steps": steps, "rel_step": rel_step, "early_stop": early_stop}
    for flag, value in flags.items():
        if value is None:
            continue
        key = "queries" if flag == "steps" and "steps" not in params and "queries" in params else flag
        if key not in params:
            raise UsageError(f"--{flag.replace('_', '-')} does not apply to {name}")
        kwargs[key] = value
    if "seed" in params:
        kwargs["seed"] = seed
    for key, value in parse_attack_options(registered, list(options)).items():
        if key in fixed:
            raise UsageError(f"{name} fixes {key}={fixed[key]!r}; use --attack {registered} to choose it")
        if key in GENERATION_FLAGS:  # (the per-batch reseed and the per-row radii would override them)
            raise UsageError(f"set {key} with {GENERATION_FLAGS[key]}, not --attack-option")
        if key in kwargs:
            raise UsageError(f"{key} is set twice (by a flag and by --attack-option)")
        kwargs[key] = value
    if kwargs.get("norm", "linf") != "linf":
        raise UsageError(f"{name}: gen-adv stores L∞ radii, so norm={kwargs['norm']} is not offered")
    if registered != "noise" and model is None:
        raise UsageError(f"--attack {name} needs --model")
    try:
        return get_attack(registered)(model, precision=precision, channels_last=channels_last, **kwargs)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{name}: {exc}") from None


def row_noise(seed: int, rows: np.ndarray, shape: tuple[int, ...], kind: str) -> torch.Tensor:
    """(len(rows), *shape) float32: U(−1, 1) (``uniform``) or N(0, 1) (``normal``) per row."""
    out = torch.empty((len(rows), *shape), dtype=torch.float32)
    for k, row in enumerate(rows):
        g = torch.Generator().manual_seed(row_generator_seed(seed, int(row)))
        if kind == "uniform":
            out[k] = torch.rand(shape, generator=g) * 2 - 1
        else:
            out[k] = torch.randn(shape, generator=g)
    return out


@dataclass
class GenerationResult:
    path: Path
    rows: int
    rows_computed: int
    already_complete: bool
    summary: dict[str, Any]


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def generate_pairs(
    *,
    source: Any,
    indices: np.ndarray,
    attack: Attack,
    eps: Sequence[float],
    out: str | os.PathLike[str],
    model: torch.nn.Module | None,
    model_id: str,
    seed: int = 0,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    overwrite: bool = False,
    bounded: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Attack ``source[indices]`` at every radius in ``eps`` and write a pair store at ``out``.

    Args:
        source: an `advkit.data.sources.ImageSource` (``load``, ``labels``, ``describe``).
        indices: (M,) source indices to attack, in row order.
        attack: an `Attack`; called as ``attack(images, labels, eps=per_row_eps, init=noise)`` (without
            ``init`` where its ``forward`` takes none), after `Attack.reseed` with the batch's seed.
        eps: the E radii (or noise sigmas); each image gets E rows.
        model: the classifier whose predictions are stored (``pred_clean``/``pred_adv``), computed in
            strict fp32 on the stored images; None stores −1.
        model_id: registry name + weights hash, recorded in the store.
        bounded: the rows are L∞-bounded by eps (float16 rounding never leaves the ball).
        shard: (i, n) — write only the i-th of n contiguous parts of the images.
        resume / overwrite: what to do with an existing ``out`` or ``out.partial``.
        on_progress: called with (rows done, rows total) after each batch.
    """
    out = Path(out)
    device = torch.device(device)
    eps = [float(e) for e in eps]
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    indices = np.asarray(indices, dtype=np.int64)
    m_start, m_stop = shard_bounds(len(indices), shard)
    shard_indices = indices[m_start:m_stop]
    n_eps = len(eps)
    rows = len(shard_indices) * n_eps
    row_offset = m_start * n_eps
    if rows == 0:
        raise UsageError("nothing to attack: the selection (or this shard) is empty")

    if model is not None:  # the model's class indices, whatever the source's own numbering
        labels_all, class_names = labels_for_model(source, getattr(model, "class_names", None),
                                                   getattr(model, "num_classes", None), model_id.split("@")[0])
    else:
        labels_all, class_names = np.asarray(source.labels(), dtype=np.int64), source.class_names
    probe = source.load(shard_indices[:1])
    image_shape = tuple(int(s) for s in probe.shape[1:])
    attack_cfg = attack.config()
    # The per-row radii replace the attack's own default radius in the record.
    attack_cfg.pop("eps", None)
    attack_cfg.pop("sigma", None)
    source_desc = source.describe()
    config = {
        "source": source_desc,
        "indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest(),
        "images": int(len(indices)),
        "model": model_id,
        "attack": attack_cfg,
        "eps": eps,
        "seed": int(seed),
        "batch_size": int(batch_size),
        "shard": list(shard),
        "device": device.type,
    }

    partial = partial_path(out)
    created = False
    try:  # (as every other command's output, the folder is made if missing)
        partial.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {partial.parent}: {exc.strerror or exc}") from exc
    with exclusive_run(out):  # (a second run on this OUT fails instead of taking it over)
        if out.exists() and not overwrite:
            if not resume:
                raise OutputExistsError(f"{out} exists; use --resume to check it or --overwrite to replace it")
            with PairStore(out) as done_store:
                info = done_store.info
                wanted = json.loads(json.dumps(config, sort_keys=True))
                if info.config != wanted:
                    raise StoreFormatError(f"{out} was made with different arguments "
                                           f"({config_difference(info.config, wanted)}); use --overwrite")
                # (a partial copied or renamed to OUT is not this run's finished store)
                if not info.complete or info.rows != rows:  # (complete: every row done)
                    raise StoreFormatError(f"{out} is not complete ({info.rows_done} of {rows} rows done); "
                                           f"finish it as {partial.name} with --resume, or use --overwrite")
                return GenerationResult(out, rows, 0, True, done_store.summary())
        if partial.exists() and resume and not overwrite:
            writer = PairStoreWriter.resume(partial, config, rows=rows, image_shape=image_shape)  # type: ignore[arg-type]
        elif partial.exists() and not overwrite:
            raise OutputExistsError(
                f"an unfinished run exists at {partial}; use --resume to finish it or --overwrite to restart"
            )
        else:
            created = True
            writer = PairStoreWriter.create(
                partial,
                rows=rows,
                image_shape=image_shape,  # type: ignore[arg-type]
                source=source_desc,
                model=model_id,
                attack={**attack_cfg, "eps_grid": eps},
                seed=seed,
                class_names=class_names,
                precision=attack.precision,
                config=config,
                extra_attrs={"shard": f"{shard[0]}/{shard[1]}", "row_offset": row_offset},
            )

        computed = 0
        try:
            done = writer.done_mask()
            if on_progress:
                on_progress(int(done.sum()), rows)
            noise_kind = "normal" if attack.name == "noise" else "uniform"
            with_init = attack.forward_takes("init")
            for start in range(0, rows, batch_size):
                stop = min(start + batch_size, rows)
                if done[start:stop].all():
                    continue
                local = np.arange(start, stop)
                pos = local // n_eps
                eps_rows = np.asarray([eps[i] for i in local % n_eps], dtype=np.float32)
                uniq, inverse = np.unique(pos, return_inverse=True)
                images_u8 = source.load(shard_indices[uniq])[inverse]
                src_idx = shard_indices[pos]
                labels = labels_all[src_idx]
                clean = torch.from_numpy(images_u8).to(device).permute(0, 3, 1, 2).float().div(255)
                noise = row_noise(seed, row_offset + local, tuple(clean.shape[1:]), noise_kind) if with_init else None
                eps_t = torch.from_numpy(eps_rows).to(device)

                pred_clean = _predict(model, clean)
                attack_labels = torch.from_numpy(labels).to(device)
                if (labels < 0).any():
                    if pred_clean is None:
                        pred_clean = _predict(attack.model, clean)
                    attack_labels = torch.where(attack_labels < 0, torch.as_tensor(pred_clean, device=device), attack_labels)
                attack.reseed(batch_generator_seed(seed, row_offset + start))
                if with_init:
                    adv = attack(clean, attack_labels, eps=eps_t, init=noise)
                else:
                    adv = attack(clean, attack_labels, eps=eps_t)
                delta = quantize_delta((adv - clean).permute(0, 2, 3, 1).float().cpu(), eps_t.cpu() if bounded else None)
                stored_adv = reconstruct_adv(images_u8, delta.numpy()).to(device)
                pred_adv = _predict(model, stored_adv)
                minus_one = np.full(len(local), -1, dtype=np.int64)
                writer.write_rows(
                    start,
                    clean=images_u8,
                    delta=delta.numpy(),
                    label=labels,
                    eps=eps_rows,
                    source_index=src_idx,
                    pred_clean=minus_one if model is None else np.asarray(pred_clean, dtype=np.int64),
                    pred_adv=minus_one if pred_adv is None else np.asarray(pred_adv, dtype=np.int64),
                )
                done[start:stop] = True
                computed += stop - start
                if on_progress:
                    on_progress(int(done.sum()), rows)
            writer.finish()
        except BaseException:
            if created and computed == 0:
                # Nothing was done (the data failed to load, Ctrl-C at once): a partial with no rows
                # would only send the next run to --resume.
                writer.close()
                partial.unlink(missing_ok=True)
            raise
        finally:
            writer.close()
        os.replace(partial, out)
        with PairStore(out) as store:
            summary = store.summary()
        return GenerationResult(out, rows, computed, False, summary)


@torch.no_grad()
def _predict(model: torch.nn.Module | None, images: torch.Tensor) -> np.ndarray | None:
    """Strict-fp32 predictions (the stored ``pred_*`` fields never depend on the attack precision)."""
    if model is None:
        return None
    return strict_fp32_predictions(model, images).cpu().numpy().astype(np.int64)
