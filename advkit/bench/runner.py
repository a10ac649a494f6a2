"""Run a bench: the AdvFilter robustness suite or the Pasadena suite, resumable from ``out``.

Every finished unit of work (a *cell*: one model × defense × mode, or one model's Pasadena run)
is written to ``out/cells/<key>.json`` at once, so a killed run started again with the same
arguments recomputes only what is missing; adversarial stores are made by `generate_pairs`,
which resumes by itself. The report (``results.json``, ``results.csv``, ``results.md`` and the
plots) is rebuilt from the cells at the end.
"""

from __future__ import annotations

import json
import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import advkit
from advkit.attacks.autoattack import RAND_EOT_SAMPLES
from advkit.bench import robustness
from advkit.bench.report import at_least_as_good, write_report
from advkit.errors import UnknownNameError, UsageError
from advkit.utils import atomic_path

SUITES = ("advfilter", "pasadena")
MODES = ("oblivious", "adaptive")
# Adaptive PGD's path length in units of eps (step = ADAPTIVE_PATH·eps/steps): Madry et al.'s 2.5,
# so that from a random start every pixel can reach either face of the eps-ball. (Foolbox's eps/30,
# the oblivious default, walks only 0.67·eps in 20 steps: on resnet20 at 1e-2 it left the bare
# model 10.8 % correct where PGD-40 at eps/30 left 1.3 %.)
ADAPTIVE_PATH = 2.5


def default_rel_step(steps: int) -> float:
    """The adaptive step for ``steps`` iterations as a fraction of eps: ADAPTIVE_PATH / steps, at
    most 1 (one step of eps already reaches a face of the ball)."""
    return min(1.0, ADAPTIVE_PATH / steps)


@dataclass
class BenchConfig:
    """Everything that defines a bench run (recorded in ``results.json``; resuming must match it).

    ``eps`` are L∞ radii on the [0, 1] scale; ``n`` images are taken balanced over classes (the first
    ``n / classes`` of each class when that divides, else the first ``n``); ``adv`` maps a model
    name to a pair store to reuse instead of attacking (oblivious mode, and the clean images of
    adaptive mode).
    """

    models: list[str]
    suite: str = "advfilter"
    data: str | None = None
    defenses: list[str] = field(default_factory=lambda: ["none", "advfilter", "pafilt", "jpeg", "smoothing",
                                                         "bitdepth", "tvm"])
    eps: list[float] = field(default_factory=lambda: [1e-3, 1e-2])
    attack: str = "pgd"
    steps: int = 40
    modes: list[str] = field(default_factory=lambda: list(MODES))
    adaptive_steps: int = 40
    # one of robustness.ADAPTIVE_ATTACKS (pgd, apgd-ce, ...), also for the sanity check
    adaptive_attack: str = "pgd"
    # The adaptive PGD's step as a fraction of eps; None: 2.5 / adaptive_steps (Madry et al.'s rule),
    # a path of 2.5·eps whatever the step count. Resolved at construction so a folder records it.
    adaptive_rel_step: float | None = None
    # EOT: gradient passes each adaptive step averages, for randomized defenses; None: 20 for
    # autoattack-rand (AutoAttack's), else 1. Resolved at construction, as the step is.
    adaptive_eot: int | None = None
    # Randomized defenses: predictions per image after the attack (mean accuracy, and accuracy under
    # every draw); deterministic defenses are classified once whatever this says.
    defense_draws: int = 1
    sanity_n: int = 100
    sanity_steps: int = 50
    n: int = 1000
    adv: dict[str, str] = field(default_factory=dict)
    methods: list[str] = field(default_factory=lambda: ["pasadena", "denoise", "mifgsm", "denoise+mifgsm"])
    denoiser: str = "kpn-cifar10"
    # Pasadena suite, --sweep: the success-vs-SSIM curves of the paper's Fig. 4 (source models only)
    sweep: bool = False
    sweep_lams: list[float] = field(default_factory=lambda: [0.5, 0.8, 0.9, 0.97])
    sweep_thetas: list[float] = field(default_factory=lambda: [0.3, 0.45, 0.6])
    sweep_eps: list[float] = field(default_factory=lambda: [2 / 255, 4 / 255, 8 / 255, 16 / 255])
    # κ, the margin Pasadena keeps past the flip (at the default λ, θ): quality traded for transfer
    sweep_confidences: list[float] = field(default_factory=lambda: [10.0, 20.0, 40.0])
    batch_size: int = 100
    seed: int = 0
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.adaptive_rel_step is None and self.adaptive_steps >= 1:
            self.adaptive_rel_step = default_rel_step(self.adaptive_steps)
        if self.adaptive_eot is None:
            self.adaptive_eot = RAND_EOT_SAMPLES if self.adaptive_attack == "autoattack-rand" else 1

    def check(self) -> None:
        if self.suite not in SUITES:
            raise UsageError(f"unknown --suite {self.suite!r}; use {' or '.join(SUITES)}")
        if not self.models:
            raise UsageError("--model names no model")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise UsageError(f"unknown --mode {','.join(bad) or '(none)'}; use oblivious and/or adaptive")
        if self.attack != "pgd":
            raise UsageError(f"unknown --attack {self.attack!r}; the bench attacks with pgd")
        if self.adaptive_attack not in robustness.ADAPTIVE_ATTACKS:
            raise UsageError(f"unknown --adaptive-attack {self.adaptive_attack!r}; use "
                             f"{', '.join(robustness.ADAPTIVE_ATTACKS)}")
        if self.weights is not None and len(self.models) > 1:
            raise UsageError("--weights applies to one --model; give models one at a time")
        for option, value in (("--n", self.n), ("--steps", self.steps), ("--adaptive-steps", self.adaptive_steps),
                              ("--sanity-n", self.sanity_n), ("--sanity-steps", self.sanity_steps),
                              ("--batch-size", self.batch_size), ("--adaptive-eot", self.adaptive_eot),
                              ("--defense-draws", self.defense_draws)):
            if value < 1:
                raise UsageError(f"{option} must be >= 1, got {value}")
        if self.adaptive_eot > 1 and self.adaptive_attack not in robustness.EOT_ATTACKS:
            raise UsageError(f"--adaptive-eot applies to {', '.join(robustness.EOT_ATTACKS)}, not "
                             f"{self.adaptive_attack}")
        if not (self.adaptive_rel_step is not None and 0 < self.adaptive_rel_step <= 1):
            raise UsageError(f"--adaptive-rel-step must lie in (0, 1], got {self.adaptive_rel_step}")
        if self.sweep and self.suite != "pasadena":
            raise UsageError("--sweep belongs to --suite pasadena")
        # (option, values, range, whether a sweep needs at least one value)
        for option, values, low, high, required in (("--sweep-lam", self.sweep_lams, 0.0, 1.0, True),
                                                    ("--sweep-theta", self.sweep_thetas, -10.0, 10.0, True),
                                                    ("--sweep-eps", self.sweep_eps, 1e-12, 1.0, True),
                                                    ("--sweep-confidence", self.sweep_confidences, 0.0, 1e6, False)):
            bad_values = [v for v in values if not low <= v <= high]
            if bad_values or (self.sweep and required and not values):
                raise UsageError(f"{option} values must lie in [{low:g}, {high:g}], got "
                                 f"{', '.join(f'{v:g}' for v in bad_values) or '(none)'}")
        for e in self.eps:
            if not 0 < e <= 1:
                raise UsageError(f"eps {e:g} is out of range (0, 1]")
        if self.suite == "advfilter" and not self.defenses:
            raise UsageError("--defense names no defense")
        from advkit.models import get_model_spec

        for name in self.models:  # unknown names fail before --out is touched
            get_model_spec(name)
        if self.suite == "advfilter":
            from advkit.defenses import check_defense_spec

            for spec in self.defenses:  # a misspelt name or option fails now, not hours into the run
                check_defense_spec(spec)
        else:
            from advkit.attacks.denoise_attack import METHODS
            from advkit.models.checkpoint import resolve_checkpoint
            from advkit.zoo import resolve_denoiser

            unknown = [m for m in self.methods if m not in METHODS]
            if unknown or not self.methods:
                raise UsageError(f"unknown --method {','.join(unknown) or '(none)'}; known: {', '.join(METHODS)}")
            resolve_checkpoint(resolve_denoiser(self.denoiser))
        unused = [f"{path} (made against {model})" for model, path in self.adv.items() if model not in self.models]
        if unused:  # (it would be ignored, and the model's own pairs generated or missing)
            raise UsageError(f"--adv {unused[0]} is for no --model ({', '.join(self.models)}); "
                             "bench takes each store for the model it was attacked against")
        if self.data is None and (self.suite == "pasadena" or any(m not in self.adv for m in self.models)):
            raise UsageError("--data is needed (or --adv STORE for every model)")


def recorded_model(store: Any) -> str:
    """The registry name of the model a pair store was attacked against (its record is ``name@sha256:...``)."""
    return str(store.info.model).split("@")[0]


def adv_stores_by_model(paths: list[str]) -> dict[str, str]:
    """Map each pair store to the model it was attacked against (its recorded registry name)."""
    from advkit.data.store import PairStore
    from advkit.models import get_model_spec

    stores: dict[str, str] = {}
    for path in paths:
        with PairStore(path, require_complete=True) as store:
            name = recorded_model(store)
            try:
                size = tuple(get_model_spec(name).input_size)
            except UnknownNameError:  # (a model bench does not know: refused as no --model below)
                size = tuple(store.info.image_shape[:2])
            if tuple(store.info.image_shape[:2]) != size:  # (a store edited or written by hand)
                raise UsageError(f"--adv {path} holds {store.info.image_shape[0]}x{store.info.image_shape[1]} "
                                 f"images; {name} takes {size[0]}x{size[1]}")
        if name in stores:
            raise UsageError(f"--adv {stores[name]} and {path} were both made against {name}")
        stores[name] = str(path)
    return stores


def _cell_path(out: Path, key: str) -> Path:
    return out / "cells" / (re.sub(r"[^A-Za-z0-9_.=-]+", "_", key) + ".json")


def _load_cell(out: Path, key: str) -> Any | None:
    path = _cell_path(out, key)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["value"]
    except (ValueError, KeyError, TypeError):  # (not UTF-8, not JSON, not a cell record)
        return None  # a damaged cell is recomputed


def _save_cell(out: Path, key: str, value: Any) -> None:
    path = _cell_path(out, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"key": key, "value": value}, default=float) + "\n")


def _cached_cell(out: Path, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """The cell ``key`` from ``out`` if a previous run finished it, else ``compute()`` saved at once.

    Returns (value, whether it was computed now).
    """
    cell = _load_cell(out, key)
    if cell is not None:
        return cell, False
    cell = compute()
    _save_cell(out, key, cell)
    return cell, True


# Cells are keyed by what they depend on (model, defense, mode, radius, sweep point), so a run may
# add defenses, modes, radii or sweep points to a folder; every other setting changes what a cell
# holds. Radii are the exception for the oblivious mode only: its PGD store in OUT/adv is made for
# one list of radii, which `_advfilter_store` checks.
_CELL_INDEPENDENT = ("defenses", "modes", "eps", "sweep", "sweep_lams", "sweep_thetas", "sweep_eps",
                     "sweep_confidences")


def _check_resume(out: Path, config: BenchConfig) -> None:
    """Refuse to mix cells of a different configuration into ``out``."""
    path = out / "bench_config.json"
    record = json.loads(json.dumps(asdict(config)))
    # A folder whose run stopped before its first cell (bad data, missing weights) holds nothing to
    # protect: its record is replaced, so fixing the command does not also need --overwrite.
    if path.is_file() and _holds_results(out):
        try:
            previous = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = None
        if not isinstance(previous, dict):  # its cells' settings cannot be known, so they cannot be kept
            raise UsageError(f"{path} is damaged (not a settings record), so the results beside it cannot be "
                             "resumed; use another --out or --overwrite")
        # a setting added to advkit after the folder was made had its default there
        defaults = json.loads(json.dumps(asdict(BenchConfig(models=config.models))))
        changed = sorted(k for k in record if k not in _CELL_INDEPENDENT
                         and previous.get(k, defaults.get(k)) != record[k])
        if changed:
            raise UsageError(f"{out} holds a bench run with other settings ({', '.join(changed)}); "
                             "use another --out or --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def _holds_results(out: Path) -> bool:
    """Whether a bench folder holds any file besides its settings record."""
    return any(p.is_file() and p.name != "bench_config.json" for p in out.rglob("*"))


def balanced_selection(labels: np.ndarray, n: int) -> dict[str, int | None]:
    """``select_indices`` arguments for ``n`` images balanced over the classes present: the first
    ``n / classes`` of each class when that divides, else the first ``n``."""
    classes = len(np.unique(labels[labels >= 0]))
    if classes and n % classes == 0:
        return {"per_class": n // classes, "limit": None}
    return {"per_class": None, "limit": n}


def select_images(labels: np.ndarray, n: int) -> np.ndarray:
    """``n`` source indices balanced over the classes present (see `balanced_selection`)."""
    from advkit.data.sources import select_indices

    return select_indices(labels, **balanced_selection(labels, n))


class _Progress:
    """One running total across the whole bench, reported as (done, total) units."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None) -> None:
        self.total, self.done, self.callback = total, 0, callback

    def advance(self, units: int) -> None:
        self.done += units
        if self.callback:
            self.callback(min(self.done, self.total), self.total)

    def follow(self) -> Callable[[int, int], None]:
        """An ``on_progress(done, total)`` for one sub-task: its ``done`` counts from the total so far."""
        base = self.done

        def step(done: int, total: int) -> None:
            self.advance(base + done - self.done)

        return step


def run_bench(
    config: BenchConfig,
    out: str | Path,
    *,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the bench described by ``config`` into the folder ``out`` and return the report dict."""
    config.check()
    out = Path(out)
    device = torch.device(device)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if overwrite and out.exists():
        import shutil

        shutil.rmtree(out)
    _check_resume(out, config)
    started = time.time()
    if config.suite == "advfilter":
        cells = _run_advfilter(config, out, device, on_progress)
    else:
        cells = _run_pasadena(config, out, device, on_progress)
    report = {
        "suite": config.suite,
        "config": asdict(config),
        "versions": _versions(),
        "device": _device_name(device),
        "wall_time_s": round(time.time() - started, 1),
        **cells,
    }
    if config.data:  # how many images the selection found: fewer than --n where the data runs short
        from advkit.data.sources import open_source

        report["images"] = int(len(select_images(open_source(config.data).labels(), config.n)))
    write_report(report, out)
    return report


def _versions() -> dict[str, str]:
    import torchvision

    versions = {"advkit": advkit.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                "python": platform.python_version()}
    try:
        import art

        versions["adversarial-robustness-toolbox"] = art.__version__
    except ImportError:  # the classical defenses need ART; the rest of the bench does not
        pass
    return versions


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ------------------------------------------------------------------------------------------------
# AdvFilter suite


def _advfilter_store(config: BenchConfig, model_name: str, classifier: torch.nn.Module, out: Path,
                     device: torch.device, progress: _Progress) -> Path:
    """The oblivious PGD store for ``model_name``: given with ``--adv`` or made (resumably) in ``out/adv``."""
    if model_name in config.adv:
        path = Path(config.adv[model_name])
        from advkit.data.store import PairStore

        with PairStore(path, require_complete=True) as store:
            if recorded_model(store) != model_name:
                raise UsageError(f"--adv {path} was made against {recorded_model(store)}, not {model_name}")
            missing = robustness.missing_radii(store, config.eps)
            if missing:
                raise UsageError(f"--adv {path} holds no rows at eps {', '.join(f'{e:g}' for e in missing)}")
        return path
    from advkit.attacks import PGD
    from advkit.attacks.generate import generate_pairs, partial_path
    from advkit.data.sources import open_source
    from advkit.models import get_model_spec

    path = out / "adv" / f"{model_name}.h5"
    source = open_source(config.data, image_size=get_model_spec(model_name).input_size)  # type: ignore[arg-type]
    indices = select_images(source.labels(), config.n)
    attack = PGD(classifier, steps=config.steps, seed=config.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_store_radii(next((p for p in (path, partial_path(path)) if p.exists()), None), config.eps, out)
    if not path.exists():
        generate_pairs(source=source, indices=indices, attack=attack, eps=config.eps, out=path, model=classifier,
                       model_id=classifier.identity, seed=config.seed, batch_size=config.batch_size,
                       device=device, resume=partial_path(path).exists(), on_progress=progress.follow())
    return path


def _check_store_radii(path: Path | None, eps: list[float], out: Path) -> None:
    """Refuse radii that the (complete or partial) bench store at ``path`` was not made for."""
    if path is None:
        return
    from advkit.data.store import PairStore

    with PairStore(path) as store:
        if robustness.missing_radii(store, eps):
            made_for = ",".join(f"{e:g}" for e in store.eps_grid())
            raise UsageError(f"{out} holds an oblivious store made for eps {made_for}; "
                             "use those radii (or a subset), another --out, or --overwrite")


def _run_advfilter(config: BenchConfig, out: Path, device: torch.device,
                   on_progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    from advkit.data.store import PairStore
    from advkit.defenses import create_defense
    from advkit.models import create_classifier

    n_def, n_eps = len(config.defenses), len(config.eps)
    per_model = 0
    if "oblivious" in config.modes:
        # generating the store (when not given), then each defense over the radii and the clean images
        per_model += config.n * n_eps * n_def + config.n * n_def
    if "adaptive" in config.modes:
        per_model += n_def * (config.n * (n_eps + 1) + min(config.sanity_n, config.n))
    generated = sum(config.n * n_eps for m in config.models if m not in config.adv and "oblivious" in config.modes)
    progress = _Progress(per_model * len(config.models) + generated, on_progress)
    oblivious: dict[str, dict[str, Any]] = {}
    adaptive: dict[str, dict[str, Any]] = {}
    defenses: dict[str, torch.nn.Module] = {}

    def defense(name: str) -> torch.nn.Module:
        if name not in defenses:
            defenses[name] = create_defense(name).to(device).eval()
        return defenses[name]

    for model_name in config.models:
        classifier = create_classifier(model_name, config.weights).to(device).eval()
        for p in classifier.parameters():
            p.requires_grad_(False)
        if "oblivious" not in config.modes and model_name not in config.adv:
            # Adaptive only: the clean images come straight from the source; no oblivious store needed.
            images, labels = _clean_from_source(config, model_name)
            adaptive[model_name] = _adaptive(config, model_name, classifier, images, labels, defense, out, device,
                                             progress)
            continue
        store_path = _advfilter_store(config, model_name, classifier, out, device, progress)
        with PairStore(store_path, require_complete=True) as store:
            rows = robustness.rows_for(store, config.eps, config.n)
            if "oblivious" in config.modes:
                oblivious[model_name] = {}
                for name in config.defenses:
                    d = defense(name)
                    cell, _ = _cached_cell(out, f"oblivious/{model_name}/{name}", lambda: robustness.oblivious_cell(
                        d, classifier, store, rows, batch_size=config.batch_size, device=device,
                        requested=config.eps, draws=_draws(config, d), seed=config.seed))
                    progress.advance(sum(r["n"] for r in cell))
                    oblivious[model_name][name] = {"per_eps": cell}
            if "adaptive" in config.modes:
                images, labels = robustness.clean_images(store, rows)
                adaptive[model_name] = _adaptive(config, model_name, classifier, images, labels, defense, out,
                                                 device, progress)
    return {"oblivious": oblivious, "adaptive": adaptive}


def _clean_from_source(config: BenchConfig, model_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    from advkit.data.sources import labels_for_model, open_source
    from advkit.models import get_model_spec

    spec = get_model_spec(model_name)
    source = open_source(config.data, image_size=spec.input_size)  # type: ignore[arg-type]
    labels, _ = labels_for_model(source, spec.class_names(), spec.num_classes, model_name)
    indices = select_images(source.labels(), config.n)  # (the oblivious store's selection: the same images)
    images = torch.from_numpy(source.load(indices)).permute(0, 3, 1, 2).float().div(255)
    return images, torch.from_numpy(labels[indices])


def _draws(config: BenchConfig, defense: torch.nn.Module) -> int:
    """Predictions per image for ``defense``: ``defense_draws`` if it is randomized, else 1."""
    from advkit.defenses import is_randomized

    return config.defense_draws if is_randomized(defense) else 1


def _adaptive_key(defense: str, gradient: str) -> str:
    """The cell-key name of ``defense`` in adaptive mode. A defense attacked through a stand-in
    gradient is keyed by it too, so a folder made when it had another (JPEG had the identity) is
    not read as this attack's; exact and identity-BPDA defenses keep their bare name."""
    if gradient in ("exact", "BPDA"):
        return defense
    return f"{defense}~{re.sub(r'[^a-z0-9]+', '-', gradient.lower()).strip('-')}"


def _adaptive(config: BenchConfig, model_name: str, classifier: torch.nn.Module, images: torch.Tensor,
              labels: torch.Tensor, defense: Callable[[str], torch.nn.Module], out: Path, device: torch.device,
              progress: _Progress) -> dict[str, Any]:
    """PGD through each defense ∘ classifier at every radius, plus the unbounded sanity check."""
    from advkit.defenses import gradient_kind, is_randomized

    results: dict[str, Any] = {}
    for name in config.defenses:
        d = defense(name)
        gradient = gradient_kind(d)
        key = _adaptive_key(name, gradient)
        # a black-box attack reads outputs only: no gradient, exact or stand-in, plays a part
        shown = "none (black box)" if config.adaptive_attack in robustness.BLACK_BOX_ATTACKS else gradient
        entry: dict[str, Any] = {"per_eps": [], "gradient": shown, "randomized": is_randomized(d)}
        k = min(config.sanity_n, len(images))
        # (key, radius, images, labels, steps, relative step); eps = 1 is the unbounded sanity check
        runs = [(f"eps={eps:g}", eps, images, labels, config.adaptive_steps, config.adaptive_rel_step)
                for eps in [0.0, *config.eps]]
        runs.append(("sanity", 1.0, images[:k], labels[:k], config.sanity_steps,
                     default_rel_step(config.sanity_steps)))
        for suffix, eps, x, y, steps, rel_step in runs:
            cell, fresh = _cached_cell(out, f"adaptive/{model_name}/{key}/{suffix}", lambda: robustness.adaptive_cell(
                d, classifier, x, y, eps, steps=steps, rel_step=rel_step, seed=config.seed,
                batch_size=config.batch_size, device=device, attack=config.adaptive_attack,
                eot_samples=config.adaptive_eot, draws=_draws(config, d), on_progress=progress.advance))
            if not fresh:
                progress.advance(cell["n"])
            if suffix != "sanity":
                entry["per_eps"].append(cell)
        entry["sanity"] = {**cell, "verdict": robustness.masking_verdict(cell["accuracy"])}
        results[name] = entry
    return results


# ------------------------------------------------------------------------------------------------
# Pasadena suite


def _attack_denoise(config: BenchConfig, model_name: str, out: Path, methods: list[str], device: torch.device,
                    selection: dict[str, Any], on_progress: Callable[[int, int], None], *, lam: float = 0.9,
                    theta: float = 0.45, confidence: float = 0.0, eps: float = 8 / 255,
                    transfer_to: list[str] | None = None) -> dict[str, Any]:
    """One `run_attack_denoise` with the suite's fixed settings (default Pasadena variant, σ = 0.1)."""
    from advkit.attacks.denoise_experiment import run_attack_denoise

    return run_attack_denoise(
        data=config.data, model=model_name, out=out, denoiser=config.denoiser,  # type: ignore[arg-type]
        methods=",".join(methods), variant="advkit", lam=lam, theta=theta, steps=None, alpha=0.1,
        kernel_step=0.01, confidence=confidence, edges="sobel", canny_width=3, gaussian=False, eps=repr(eps),
        sigma=0.1,
        transfer_to=",".join(transfer_to or []) or None, **selection, batch_size=config.batch_size,
        save_png=False, overwrite=True, device=device, seed=config.seed, on_progress=on_progress,
    )


def _run_pasadena(config: BenchConfig, out: Path, device: torch.device,
                  on_progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    from advkit.data.sources import open_source

    # The same images as the AdvFilter suite picks.
    selection = balanced_selection(open_source(config.data).labels(), config.n)  # type: ignore[arg-type]
    n_runs = len(config.methods) + (len(sweep_points(config)) if config.sweep else 0)
    progress = _Progress(config.n * n_runs * len(config.models), on_progress)
    results: dict[str, Any] = {}
    for model_name in config.models:

        def attack(model_name: str = model_name) -> dict[str, Any]:
            targets = [m for m in config.models if m != model_name]
            return _attack_denoise(config, model_name, out / "pasadena" / model_name, config.methods, device,
                                   selection, progress.follow(), transfer_to=targets)

        cell, fresh = _cached_cell(out, f"pasadena/{model_name}", attack)
        if not fresh:
            progress.advance(config.n * len(config.methods))
        results[model_name] = cell
    if not config.sweep:
        return {"pasadena": results}
    return {"pasadena": results, "pasadena_sweep": _pasadena_sweep(config, out, device, selection, progress)}


def sweep_points(config: BenchConfig) -> list[tuple[str, dict[str, float]]]:
    """The sweep's runs: Pasadena at every (λ, θ) and every κ, each ε-bounded method of ``methods`` at
    every ε."""
    from advkit.attacks.denoise_attack import METHODS

    points: list[tuple[str, dict[str, float]]] = []
    if "pasadena" in config.methods:
        points += [("pasadena", {"lam": lam, "theta": theta}) for lam in config.sweep_lams
                   for theta in config.sweep_thetas]
        points += [("pasadena", {"confidence": kappa}) for kappa in config.sweep_confidences]
    bounded = [m for m in config.methods if m in METHODS and m not in ("pasadena", "denoise")]
    points += [(m, {"eps": eps}) for m in bounded for eps in config.sweep_eps]
    return points


def _pasadena_sweep(config: BenchConfig, out: Path, device: torch.device, selection: dict[str, Any],
                    progress: _Progress) -> dict[str, Any]:
    """Success and image quality along each method's parameter sweep, one cached cell per point."""
    sweep: dict[str, Any] = {}
    for model_name in config.models:
        curves: dict[str, list[dict[str, Any]]] = {}
        for method, params in sweep_points(config):
            key = "_".join(f"{k}{v:.6g}" for k, v in params.items())

            def attack(method: str = method, params: dict[str, float] = params, key: str = key,
                       model_name: str = model_name) -> dict[str, Any]:
                result = _attack_denoise(config, model_name,
                                         out / "pasadena_sweep" / model_name / method.replace("+", "_") / key,
                                         [method], device, selection, progress.follow(), **params)
                r = result["methods"][method]
                return {**params, **{k: r[k] for k in ("n", "success", "psnr", "ssim", "psnr_l", "brisque")}}

            cell, fresh = _cached_cell(out, f"pasadena_sweep/{model_name}/{method}/{key}", attack)
            if not fresh:
                progress.advance(config.n)
            curves.setdefault(method, []).append(cell)
        sweep[model_name] = {"curves": curves, "dominance": sweep_dominance(curves)}
    return sweep


def sweep_dominance(curves: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """Per baseline: how many of its sweep points some Pasadena point matches or beats on both axes.

    A baseline point (SSIM s, success p) is dominated when a Pasadena point has SSIM ≥ s and success
    ≥ p; "Pasadena's curve lies above the baseline's" holds when every point is dominated.
    """
    ours = curves.get("pasadena", [])
    verdict: dict[str, dict[str, int]] = {}
    for method, points in curves.items():
        if method == "pasadena":
            continue
        dominated = sum(any(at_least_as_good(q, p) for q in ours) for p in points)
        verdict[method] = {"dominated": dominated, "points": len(points)}
    return verdict
