"""Minimum-norm attacks: DeepFool (L2), Carlini–Wagner L2, FAB (L∞), EAD (L1) and the decision-based
HopSkipJump (L2), advkit vs torchattacks vs ART in the same run, on the same images, with the same settings.

For each attack: images per second over whole batches after a warm-up batch, the share of the
correctly classified images it fools, and the median distance of those it fools (L2 for DeepFool
and CW and HopSkipJump, L∞ in 1/255 for FAB, L1 for EAD; smaller is better), with ratios of speed against each
peer. Peers:

- torchattacks: ``DeepFool`` (one image at a time), ``CW`` (one c, no search), ``FAB``
  (untargeted), ``EADL1``.
- ART: ``DeepFool``, ``CarliniL2Method`` (its own optimizer and line search: the same
  objective, not the same algorithm), ``ElasticNet`` (EAD, decision rule L1) and ``HopSkipJump``
  (one image at a time); ART has no FAB, torchattacks no HopSkipJump.

Example (CPU): ``python -m benchmarks.min_norm --device cpu --n 100``
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable

import torch

from advkit.attacks import CW, EAD, FAB, DeepFool, HopSkipJump
from benchmarks.peers import art_classifier, art_runner, peer_parser, run_against_peers, setup, speedup

ATTACKS = ("deepfool", "cw", "fab", "ead", "hsj")


class Float32Input(torch.nn.Module):
    """``model`` on float32 input: ART's HopSkipJump interpolates in float64 and passes that on."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.num_classes = model, model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.float())


def advkit_attack(name: str, model: torch.nn.Module, args: argparse.Namespace) -> Callable:
    if name == "deepfool":
        return DeepFool(model, steps=50, overshoot=0.02)
    if name == "cw":
        return CW(model, c=args.cw_c, steps=args.cw_steps, lr=0.01)
    if name == "ead":
        return EAD(model, steps=args.ead_steps, binary_search_steps=args.ead_searches)
    if name == "hsj":
        return HopSkipJump(model, norm="l2", steps=args.hsj_steps)
    return FAB(model, eps=1.0, steps=args.fab_steps)  # eps 1: keep every adversarial, however far


def torchattacks_attack(name: str, model: torch.nn.Module, args: argparse.Namespace) -> Callable | None:
    try:
        import torchattacks
    except ImportError:
        return None
    if name == "hsj":
        return None
    if name == "deepfool":
        attack = torchattacks.DeepFool(model, steps=50, overshoot=0.02)
    elif name == "cw":
        attack = torchattacks.CW(model, c=args.cw_c, steps=args.cw_steps, lr=0.01)
    elif name == "ead":
        attack = torchattacks.EADL1(model, max_iterations=args.ead_steps, binary_search_steps=args.ead_searches)
    else:
        attack = torchattacks.FAB(model, eps=1.0, steps=args.fab_steps, n_classes=model.num_classes, seed=0)
    return lambda a, b: attack(a.contiguous(), b).detach()


def art_attack(name: str, model: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace,
               device: torch.device) -> Callable | None:
    try:
        from art.attacks.evasion import CarliniL2Method, ElasticNet
        from art.attacks.evasion import DeepFool as ArtDeepFool
        from art.attacks.evasion import HopSkipJump as ArtHopSkipJump
    except ImportError:
        return None
    if name == "fab":
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = art_classifier(Float32Input(model) if name == "hsj" else model, x, device)
        if name == "hsj":
            attack = ArtHopSkipJump(clf, norm=2, max_iter=args.hsj_steps, max_eval=10_000, init_eval=100, init_size=100,
                                    batch_size=args.batch_size, verbose=False)
        elif name == "deepfool":
            attack = ArtDeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=model.num_classes,
                                 batch_size=args.batch_size, verbose=False)
        elif name == "ead":
            attack = ElasticNet(clf, confidence=0.0, learning_rate=0.01, binary_search_steps=args.ead_searches,
                                max_iter=args.ead_steps, beta=1e-3, initial_const=1e-3, batch_size=args.batch_size,
                                decision_rule="L1", verbose=False)
        else:
            attack = CarliniL2Method(clf, confidence=0.0, learning_rate=0.01, binary_search_steps=1,
                                     max_iter=args.cw_steps, initial_const=args.cw_c, batch_size=args.batch_size,
                                     verbose=False)
    return art_runner(attack, device)


def outcome(model: torch.nn.Module, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, name: str,
            batch: int) -> tuple[float, float]:
    """(share of the correctly classified images fooled, median distance over those fooled)."""
    with torch.no_grad():
        clean = torch.cat([model(x[s : s + batch]).argmax(1) for s in range(0, len(x), batch)]) == y
        after = torch.cat([model(adv[s : s + batch]).argmax(1) for s in range(0, len(x), batch)])
    fooled = clean & (after != y)
    delta = (adv - x).flatten(1)
    if name == "fab":
        distance = delta.abs().amax(1) * 255
    else:
        distance = delta.abs().sum(1) if name == "ead" else delta.norm(dim=1)
    median = float(distance[fooled].median()) if fooled.any() else float("nan")
    return float(fooled.sum() / clean.sum().clamp_min(1)), median


def main() -> None:
    parser = peer_parser(__doc__.splitlines()[0], ATTACKS)
    parser.add_argument("--cw-c", type=float, default=0.1)
    parser.add_argument("--cw-steps", type=int, default=50)
    parser.add_argument("--fab-steps", type=int, default=10)
    parser.add_argument("--ead-steps", type=int, default=100)
    parser.add_argument("--ead-searches", type=int, default=9)
    parser.add_argument("--hsj-steps", type=int, default=10)
    args = parser.parse_args()
    device, model, x, y, env = setup(args)
    makers = {"advkit": lambda name: advkit_attack(name, model, args),
              "torchattacks": lambda name: torchattacks_attack(name, model, args),
              "ART": lambda name: art_attack(name, model, x, args, device)}

    def measure(name: str, adv: torch.Tensor) -> dict:
        fooled, median = outcome(model, x, adv, y, name, args.batch_size)
        return {"fooled": fooled, "median_distance": median}

    rows = run_against_peers(parser, args, ATTACKS, makers, x, y, device, measure)
    print(f"# minimum-norm attacks on {env['device']}: {args.model}, {args.n} images; CW c={args.cw_c:g}, "
          f"{args.cw_steps} steps; FAB {args.fab_steps} steps; EAD {args.ead_searches}×{args.ead_steps}; "
          f"HopSkipJump {args.hsj_steps} iterations; "
          "distance L2 (FAB: L∞ ×255, EAD: L1)")
    print(f"{'attack':<9} {'by':<13} {'img/s':>9} {'fooled':>7} {'median dist.':>13} {'advkit speed ×':>15}")
    for r in rows:
        if "error" in r:
            print(f"{r['attack']:<9} {r['by']:<13} {r['error']}")
            continue
        print(f"{r['attack']:<9} {r['by']:<13} {r['img_per_s']:>9.1f} {r['fooled']:>7.3f} "
              f"{r['median_distance']:>13.4f} {speedup(rows, r):>14.2f}×")
    if args.json:
        args.json.write_text(json.dumps({"env": env, "args": vars(args) | {"json": None}, "rows": rows}, indent=2,
                                        default=str))


if __name__ == "__main__":
    main()
