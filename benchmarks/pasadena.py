"""Pasadena's cost against MI-FGSM-10 on the same noisy images, batched and one image at a time.

Rows (images per second, seconds per image, success rate, mean iterations where known):

- ``MI-FGSM-10``: the reference baseline at 8/255 on the noisy input.
- ``Pasadena (advkit)`` / ``Pasadena (paper)``: the attack with the KPN, batched; early exit per
  image, so its cost depends on how soon each image flips.
- ``Pasadena (advkit), batch 1``: the same images one at a time — batching must not be slower per
  image.

The ratio column is each row's seconds per image over MI-FGSM-10's (target ≤ 1.5× on the H100).

Example (from the repository root): ``python -m benchmarks.pasadena --device cpu --n 64``
(KPN: the shipped ``kpn-cifar10`` or ``--denoiser PATH``.)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from advkit.attacks import MIFGSM, Pasadena
from advkit.attacks.edges import SobelEdges
from advkit.attacks.pasadena import add_gaussian_noise
from advkit.defenses import AdvFilter
from advkit.models import create_classifier
from benchmarks.gen_adv import load_images, sync


def run(attack, noisy: torch.Tensor, labels: torch.Tensor, batch: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """Seconds for the whole set (after a one-batch warm-up) and the outputs."""
    attack(noisy[:batch], labels[:batch])
    sync(device)
    start = time.perf_counter()
    outs = [attack(noisy[i : i + batch], labels[i : i + batch]) for i in range(0, len(noisy), batch)]
    sync(device)
    return time.perf_counter() - start, torch.cat(outs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--denoiser", default="kpn-cifar10")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--single", type=int, default=16, help="images timed one at a time")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    clean, _ = load_images(args.model, args.n, torch.device("cpu"))
    noisy = add_gaussian_noise(clean, 0.1, seed=0).to(device)
    model = create_classifier(args.model).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    kpn = AdvFilter(args.denoiser).denoiser.to(device)
    with torch.no_grad():
        labels = model(noisy).argmax(1)

    rows = []

    def record(name: str, seconds: float, out: torch.Tensor, n: int, extra: dict | None = None) -> None:
        with torch.no_grad():
            success = float((model(out).argmax(1) != labels[:n]).float().mean())
        rows.append({"name": name, "images": n, "s_per_image": seconds / n, "img_per_s": n / seconds,
                     "success": success, **(extra or {})})

    mi = MIFGSM(model, eps=8 / 255, steps=10)
    t, out = run(mi, noisy, labels, args.batch_size, device)
    record("MI-FGSM-10 (8/255)", t, out, len(noisy))
    for variant in ("advkit", "paper"):
        attack = Pasadena(model, kpn, SobelEdges(), variant=variant, seed=0)
        t, out = run(attack, noisy, labels, args.batch_size, device)
        record(f"Pasadena ({variant})", t, out, len(noisy))
    k = min(args.single, len(noisy))
    attack = Pasadena(model, kpn, SobelEdges(), variant="advkit", seed=0)
    t, out = run(attack, noisy[:k], labels[:k], 1, device)
    record("Pasadena (advkit), batch 1", t, out, k)
    t, out = run(attack, noisy[:k], labels[:k], k, device)
    record(f"Pasadena (advkit), batch {k} (same images)", t, out, k)

    ref = rows[0]["s_per_image"]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)")
    print(f"device: {device_name}; model {args.model}; {args.n} images, batch {args.batch_size}")
    print(f"{'method':44s} {'img/s':>9s} {'ms/img':>9s} {'× MI-FGSM':>10s} {'success':>8s}")
    for r in rows:
        print(f"{r['name']:44s} {r['img_per_s']:9.1f} {1000 * r['s_per_image']:9.2f} "
              f"{r['s_per_image'] / ref:10.2f} {r['success']:8.3f}")
    if args.json:
        args.json.write_text(json.dumps({"device": device_name, "args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
