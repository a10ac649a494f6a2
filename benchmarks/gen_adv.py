"""PGD throughput: advkit vs torchattacks vs ART in the same run, plus SPEC's precision check.

For each model, PGD-``steps`` on ``n`` images at each eps, timed as images per second over whole
batches after a warm-up batch. Every peer uses the same eps, step (eps/30 unless ``--step-ratio``)
and random start, and the success rate (share of images whose prediction changed) is printed next
to the speed so strength is compared too. Rows:

- ``advkit fp32``: strict fp32 (TF32 off). ``advkit tf32``, ``advkit bf16+cl`` (bf16 autocast and
  channels_last), and on CUDA ``advkit bf16+cl+compile``.
- ``torchattacks``: ``torchattacks.PGD`` with PyTorch's default flags (cuDNN TF32 on).
- ``ART``: ``ProjectedGradientDescentPyTorch``.

Precision check (SPEC "Precision"): PGD-40 success at the smallest and largest radius for fp32,
tf32 and bf16 on a CIFAR model with real weights; ``auto`` = the fastest precision within 0.5
points of fp32 at both. ``--record-auto`` writes that choice for this device into
``$ADVKIT_HOME/precision.json``, which ``--precision auto`` reads.

Example (CPU, small): ``python benchmarks/gen_adv.py --device cpu --n 64 --models resnet56``
Example (H100): ``python benchmarks/gen_adv.py --device cuda --n 1024 --record-auto --json out.json``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from advkit.attacks import PGD
from advkit.models import create_classifier
from advkit.precision import precision_scope

SHARED = Path(os.environ.get("ADVKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_images(model_name: str, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR test images (first per class) for CIFAR models; the same upsampled to 224² for ImageNet ones."""
    d = np.load(SHARED / "cifar10_test.npz")
    idx = np.concatenate([np.where(d["y"] == c)[0][: (n + 9) // 10] for c in range(10)])[:n]
    x = torch.from_numpy(d["x"][idx]).permute(0, 3, 1, 2).float().div(255)
    y = torch.from_numpy(d["y"][idx])
    if model_name in ("resnet50", "vgg16", "inception_v3"):
        size = 299 if model_name == "inception_v3" else 224
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.to(device), y.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, x: torch.Tensor, y: torch.Tensor, batch: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """(images per second, adversarial images) over whole batches, after one warm-up batch."""
    fn(x[:batch], y[:batch])
    sync(device)
    outs = []
    t0 = time.perf_counter()
    for s in range(0, len(x), batch):
        outs.append(fn(x[s : s + batch], y[s : s + batch]))
    sync(device)
    return len(x) / (time.perf_counter() - t0), torch.cat(outs)


@torch.no_grad()
def success(model: torch.nn.Module, x: torch.Tensor, adv: torch.Tensor, batch: int) -> float:
    with precision_scope("fp32", x.device):
        before = torch.cat([model(x[s : s + batch]).argmax(1) for s in range(0, len(x), batch)])
        after = torch.cat([model(adv[s : s + batch]).argmax(1) for s in range(0, len(x), batch)])
    return float((before != after).float().mean())


def run_model(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    pretrained = name not in ("resnet50", "vgg16", "inception_v3")
    model = create_classifier(name, pretrained=pretrained).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = load_images(name, args.n, device)
    rows = []
    for eps in args.eps:
        step = eps * args.step_ratio
        variants = {
            "advkit fp32": PGD(model, eps=eps, steps=args.steps, rel_step=args.step_ratio, precision="fp32"),
        }
        if device.type == "cuda":
            variants["advkit tf32"] = PGD(model, eps=eps, steps=args.steps, rel_step=args.step_ratio, precision="tf32")
        variants["advkit bf16+cl"] = PGD(model, eps=eps, steps=args.steps, rel_step=args.step_ratio,
                                         precision="bf16", channels_last=True)
        if device.type == "cuda" and not args.no_compile:
            variants["advkit bf16+cl+compile"] = PGD(torch.compile(model), eps=eps, steps=args.steps,
                                                     rel_step=args.step_ratio, precision="bf16", channels_last=True)
        for label, attack in variants.items():
            rate, adv = timed(lambda a, b, atk=attack: atk(a, b), x, y, args.batch_size, device)
            rows.append({"model": name, "eps": eps, "method": label, "img_per_s": rate,
                         "success": success(model, x, adv, args.batch_size)})
        try:
            import torchattacks

            ta = torchattacks.PGD(model, eps=eps, alpha=step, steps=args.steps, random_start=True)
            rate, adv = timed(lambda a, b: ta(a, b), x, y, args.batch_size, device)
            rows.append({"model": name, "eps": eps, "method": "torchattacks", "img_per_s": rate,
                         "success": success(model, x, adv, args.batch_size)})
        except ImportError:
            rows.append({"model": name, "eps": eps, "method": "torchattacks", "error": "not installed"})
        try:
            from art.attacks.evasion import ProjectedGradientDescentPyTorch
            from art.estimators.classification import PyTorchClassifier

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                        nb_classes=model.num_classes, clip_values=(0.0, 1.0),
                                        device_type="gpu" if device.type == "cuda" else "cpu")
                art = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=step, max_iter=args.steps,
                                                      num_random_init=1, batch_size=args.batch_size, verbose=False)

                def art_fn(a, b):
                    return torch.from_numpy(art.generate(a.cpu().numpy(), y=b.cpu().numpy())).to(device)

                rate, adv = timed(art_fn, x, y, args.batch_size, device)
            rows.append({"model": name, "eps": eps, "method": "ART", "img_per_s": rate,
                         "success": success(model, x, adv, args.batch_size)})
        except ImportError:
            rows.append({"model": name, "eps": eps, "method": "ART", "error": "not installed"})
    return rows


def precision_check(args: argparse.Namespace, device: torch.device) -> dict:
    """PGD-40 success per precision at the smallest and largest radius (SPEC "Precision")."""
    model = create_classifier(args.check_model).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = load_images(args.check_model, args.check_n, device)
    precisions = ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    radii = [min(args.check_eps), max(args.check_eps)]
    result: dict = {"model": args.check_model, "n": len(x), "radii": radii, "success": {}, "img_per_s": {}}
    for prec in precisions:
        result["success"][prec] = {}
        for eps in radii:
            attack = PGD(model, eps=eps, steps=40, precision=prec, channels_last=prec == "bf16", seed=0)
            rate, adv = timed(lambda a, b, atk=attack: atk(a, b), x, y, args.batch_size, device)
            result["success"][prec][str(eps)] = success(model, x, adv, args.batch_size)
            result["img_per_s"].setdefault(prec, []).append(rate)
    ok = [p for p in precisions
          if all(abs(result["success"][p][str(e)] - result["success"]["fp32"][str(e)]) <= 0.005 for e in radii)]
    speed = {p: float(np.mean(result["img_per_s"][p])) for p in precisions}
    result["auto"] = max(ok, key=lambda p: speed[p])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="resnet50,resnet56")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eps", default="0.0313725,0.001")
    parser.add_argument("--step-ratio", type=float, default=1 / 30)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--check-model", default="resnet20")
    parser.add_argument("--check-n", type=int, default=1000)
    parser.add_argument("--check-eps", default="1e-4,0.0313725")
    parser.add_argument("--skip-check", action="store_true")
    parser.add_argument("--record-auto", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.eps = [float(e) for e in args.eps.split(",")]
    args.check_eps = [float(e) for e in args.check_eps.split(",")]
    device = torch.device(args.device)
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "threads": torch.get_num_threads(), "python": sys.version.split()[0]}
    rows = []
    for name in args.models.split(","):
        rows += run_model(name, args, device)
    print(f"# PGD-{args.steps} throughput on {env['device']} (batch {args.batch_size}, n {args.n})")
    print(f"{'model':<10} {'eps':>9} {'method':<24} {'img/s':>9} {'success':>8} {'vs torchattacks':>16} {'vs ART':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<10} {r['eps']:>9.4g} {r['method']:<24} {r['error']}")
            continue
        peers = {p["method"]: p for p in rows if p["model"] == r["model"] and p["eps"] == r["eps"] and "error" not in p}
        ta = peers.get("torchattacks", {}).get("img_per_s")
        art = peers.get("ART", {}).get("img_per_s")
        print(f"{r['model']:<10} {r['eps']:>9.4g} {r['method']:<24} {r['img_per_s']:>9.1f} {r['success']:>8.3f} "
              f"{(r['img_per_s'] / ta if ta else float('nan')):>15.2f}× {(r['img_per_s'] / art if art else float('nan')):>7.2f}×")
    check = None
    if not args.skip_check:
        check = precision_check(args, device)
        print(f"# precision check: PGD-40 success on {check['model']} ({check['n']} images)")
        for prec, by_eps in check["success"].items():
            cells = "  ".join(f"eps {e}: {v:.3f}" for e, v in by_eps.items())
            print(f"{prec:<5} {cells}  ({np.mean(check['img_per_s'][prec]):.1f} img/s)")
        print(f"auto → {check['auto']}")
        if args.record_auto:
            from advkit.models.weights import advkit_home

            record = advkit_home() / "precision.json"
            record.parent.mkdir(parents=True, exist_ok=True)
            data = json.loads(record.read_text()) if record.is_file() else {}
            data[env["device"]] = check["auto"]
            record.write_text(json.dumps(data, indent=2))
            print(f"recorded in {record}")
    if args.json:
        args.json.write_text(json.dumps({"env": env, "args": {k: v for k, v in vars(args).items() if k != "json"},
                                         "rows": rows, "precision_check": check}, indent=2, default=str))


if __name__ == "__main__":
    main()
