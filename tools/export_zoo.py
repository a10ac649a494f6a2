"""Copy a trained denoiser checkpoint into the package zoo (float16 weights) and index it.

    python tools/export_zoo.py runs/filt_sem/best.safetensors advfilter-cifar10-filt \
        --description "..." --metrics runs/eval_filt.json

The weights are stored as float16 (half the size; `load_denoiser` loads them into float32
parameters); the config stays embedded in the safetensors metadata, and `advkit/zoo/index.json`
gets the entry with the training record and the measured numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from advkit.models.checkpoint import CONFIG_KEY, read_checkpoint_record, resolve_checkpoint
from advkit.utils import sha256_file

ZOO = Path(__file__).resolve().parents[1] / "advkit" / "zoo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("name")
    parser.add_argument("--description", required=True)
    parser.add_argument("--metrics", type=Path, help="JSON file of measured numbers to record")
    parser.add_argument("--command", default="", help="the training command, for the record")
    args = parser.parse_args()
    src = resolve_checkpoint(args.checkpoint)
    record = read_checkpoint_record(src)
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
    dst = ZOO / f"{args.name}.safetensors"
    save_file(state, str(dst), metadata={CONFIG_KEY: json.dumps(record["config"], sort_keys=True)})
    dst.chmod(0o644)  # safetensors writes 0600; the package file must be world-readable once installed
    index_path = ZOO / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    index[args.name] = {
        "file": dst.name,
        "arch": record["config"]["arch"],
        "description": args.description,
        "sha256": sha256_file(dst),
        "bytes": dst.stat().st_size,
        "train": record.get("train"),
        "epoch": record.get("epoch"),
        "command": args.command,
        "metrics": json.loads(args.metrics.read_text()) if args.metrics else None,
    }
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    print(f"{dst} ({dst.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
