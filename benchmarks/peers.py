"""What the attack-versus-peers benchmarks share: arguments, the frozen model and images, the
environment record, and the loop that times advkit and each peer on the same batches."""

from __future__ import annotations

import argparse
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from advkit.models import create_classifier
from benchmarks.gen_adv import load_images, timed

# (attack name) -> a callable adv = f(images, labels), or None where that party has no such attack
Maker = Callable[[str], Callable | None]


def peer_parser(description: str, attacks: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--attacks", default=",".join(attacks))
    parser.add_argument("--peers", default="torchattacks,ART")
    parser.add_argument("--json", type=Path)
    return parser


def setup(args: argparse.Namespace) -> tuple[torch.device, torch.nn.Module, torch.Tensor, torch.Tensor, dict]:
    """(device, the model in eval mode without parameter gradients, images, labels, environment)."""
    device = torch.device(args.device)
    model = create_classifier(args.model).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = load_images(args.model, args.n, device)
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "threads": torch.get_num_threads(), "python": sys.version.split()[0]}
    return device, model, x, y, env


def run_against_peers(
    parser: argparse.ArgumentParser, args: argparse.Namespace, attacks: tuple[str, ...], makers: dict[str, Maker],
    x: torch.Tensor, y: torch.Tensor, device: torch.device, measure: Callable[[str, torch.Tensor], dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per (attack, party): img/s from `timed` plus ``measure(attack, adv)``, or an error
    row where the party lacks the attack. ``makers`` maps "advkit" and each peer to its maker."""
    peers = args.peers.split(",") if args.peers else []
    rows: list[dict[str, Any]] = []
    for name in args.attacks.split(","):
        if name not in attacks:
            parser.error(f"unknown attack {name!r}; use {', '.join(attacks)}")
        for who, make in makers.items():
            if who != "advkit" and who not in peers:
                continue
            attack = make(name)
            if attack is None:
                rows.append({"attack": name, "by": who, "error": "not available"})
                continue
            torch.manual_seed(0)  # the peers draw their random starts from torch's global generator
            rate, adv = timed(lambda a, b, atk=attack: atk(a, b), x, y, args.batch_size, device)
            rows.append({"attack": name, "by": who, "img_per_s": rate, **measure(name, adv.detach())})
    return rows


def speedup(rows: list[dict[str, Any]], row: dict[str, Any]) -> float:
    """advkit's images/s over ``row``'s, for the same attack."""
    ours = next(r for r in rows if r["attack"] == row["attack"] and r["by"] == "advkit")
    return ours["img_per_s"] / row["img_per_s"]


def art_classifier(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> Any:
    """ART's PyTorchClassifier around ``model`` for images shaped like ``x`` in [0, 1] (ART imported)."""
    from art.estimators.classification import PyTorchClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                 nb_classes=model.num_classes, clip_values=(0.0, 1.0),
                                 device_type="gpu" if device.type == "cuda" else "cpu")


def art_runner(attack: Any, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An ART evasion attack as adv = f(images, labels) on torch tensors (ART works in numpy)."""

    def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.from_numpy(attack.generate(images.cpu().numpy(), y=labels.cpu().numpy())).to(device)

    return run
