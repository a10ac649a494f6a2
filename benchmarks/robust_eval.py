"""Robust-evaluation attacks: APGD-CE, APGD-DLR, APGD-T, FAB-T and Square, advkit vs torchattacks vs ART
in the same run, on the same images, with the same budget.

For each attack: images per second over whole batches after a warm-up batch, and the robust
accuracy it leaves (lower is stronger), with ratios of speed against each peer. Peers:

- torchattacks: ``APGD`` (loss ce / dlr), ``APGDT`` (9 targets), ``FAB`` (multi-targeted, 9
  targets), ``Square``.
- ART: ``AutoProjectedGradientDescent`` (cross_entropy / difference_logits_ratio, one random
  init) and ``SquareAttack``; ART has no APGD-T or FAB.

Budgets are per image: ``--steps`` APGD and FAB iterations (per target for APGD-T and FAB-T) and ``--queries``
Square queries. Images already misclassified count as not robust for everybody.

``--norm l2`` runs every attack in L2 (``--eps`` is then an L2 radius): advkit's and
torchattacks' ``norm="L2"``, ART's ``norm=2``.

Example (CPU): ``python -m benchmarks.robust_eval --device cpu --n 100 --steps 10 --queries 100``
Example (GPU): ``python -m benchmarks.robust_eval --device cuda --n 1000 --batch-size 500 --json out.json``
Example (L2): ``python -m benchmarks.robust_eval --device cpu --norm l2 --eps 0.1``
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable

import numpy as np
import torch

from advkit.attacks import APGD, APGDT, FABT, Square
from benchmarks.peers import art_classifier, art_runner, peer_parser, run_against_peers, setup, speedup

ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")


def robust_accuracy(model: torch.nn.Module, adv: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    with torch.no_grad():
        pred = torch.cat([model(adv[s : s + batch]).argmax(1) for s in range(0, len(adv), batch)])
    return float((pred == y).float().mean())


def advkit_attack(name: str, model: torch.nn.Module, eps: float, args: argparse.Namespace) -> Callable:
    if name == "square":
        return Square(model, eps=eps, queries=args.queries, norm=args.norm)
    if name == "apgd-t":
        return APGDT(model, eps=eps, steps=args.steps, norm=args.norm)
    if name == "fab-t":
        return FABT(model, eps=eps, steps=args.steps, norm=args.norm)
    return APGD(model, eps=eps, steps=args.steps, loss=name.removeprefix("apgd-"), early_stop=True, norm=args.norm)


def torchattacks_attack(name: str, model: torch.nn.Module, eps: float, args: argparse.Namespace) -> Callable | None:
    try:
        import torchattacks
    except ImportError:
        return None
    norm = "L2" if args.norm == "l2" else "Linf"
    if name == "square":
        square = torchattacks.Square(model, norm=norm, eps=eps, n_queries=args.queries, seed=0)
        return lambda a, b: square(a.contiguous(), b)  # its L2 start views the images: needs contiguity
    if name == "apgd-t":
        return torchattacks.APGDT(model, norm=norm, eps=eps, steps=args.steps, n_classes=model.num_classes, seed=0)
    if name == "fab-t":
        fab = torchattacks.FAB(model, norm=norm, eps=eps, steps=args.steps, multi_targeted=True,
                               n_classes=model.num_classes, seed=0)
        return lambda a, b: fab(a.contiguous(), b)  # its targeted search views the gradient: needs contiguity
    return torchattacks.APGD(model, norm=norm, eps=eps, steps=args.steps, loss=name.removeprefix("apgd-"), seed=0)


def art_attack(name: str, model: torch.nn.Module, eps: float, x: torch.Tensor, args: argparse.Namespace,
               device: torch.device) -> Callable | None:
    try:
        from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
    except ImportError:
        return None
    if name in ("apgd-t", "fab-t"):
        return None
    norm = 2 if args.norm == "l2" else np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = art_classifier(model, x, device)
        if name == "square":
            attack = SquareAttack(clf, norm=norm, eps=eps, max_iter=args.queries, p_init=0.8, nb_restarts=1,
                                  batch_size=args.batch_size, verbose=False)
        else:
            loss = "cross_entropy" if name == "apgd-ce" else "difference_logits_ratio"
            attack = AutoProjectedGradientDescent(clf, norm=norm, eps=eps, eps_step=2 * eps, max_iter=args.steps,
                                                  nb_random_init=1, batch_size=args.batch_size, loss_type=loss,
                                                  verbose=False)
    return art_runner(attack, device)


def main() -> None:
    parser = peer_parser(__doc__.splitlines()[0], ATTACKS)
    parser.add_argument("--eps", type=float, default=1 / 255)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf")
    args = parser.parse_args()
    device, model, x, y, env = setup(args)
    makers = {"advkit": lambda name: advkit_attack(name, model, args.eps, args),
              "torchattacks": lambda name: torchattacks_attack(name, model, args.eps, args),
              "ART": lambda name: art_attack(name, model, args.eps, x, args, device)}

    def measure(name: str, adv: torch.Tensor) -> dict:
        return {"robust_accuracy": robust_accuracy(model, adv, y, args.batch_size),
                "max_linf": float((adv - x).abs().max()), "max_l2": float((adv - x).flatten(1).norm(dim=1).max())}

    rows = run_against_peers(parser, args, ATTACKS, makers, x, y, device, measure)
    clean = robust_accuracy(model, x, y, args.batch_size)
    print(f"# robust evaluation on {env['device']}: {args.model}, {args.n} images, {args.norm} eps {args.eps:.5g}, "
          f"{args.steps} APGD/FAB steps, {args.queries} Square queries; clean accuracy {clean:.3f}")
    print(f"{'attack':<9} {'by':<13} {'img/s':>9} {'robust acc':>10} {'advkit speed ×':>15}")
    for r in rows:
        if "error" in r:
            print(f"{r['attack']:<9} {r['by']:<13} {r['error']}")
            continue
        print(f"{r['attack']:<9} {r['by']:<13} {r['img_per_s']:>9.1f} {r['robust_accuracy']:>10.3f} "
              f"{speedup(rows, r):>14.2f}×")
    if args.json:
        args.json.write_text(json.dumps({"env": env, "args": vars(args) | {"json": None}, "clean_accuracy": clean,
                                         "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
