#!/usr/bin/env bash
# Fill the git-ignored device-carry/ folder with what tools/device_pending.sh needs on the GPU
# machine, which reaches neither ../shared nor PyPI:
# - data/cifar10_test.npz: the first 500 CIFAR-10 test images of each class, 5000 in their stored
#   order (the file is sorted by class, so its first 5000 would hold five classes only; the bench's
#   1000 class-balanced images and the tests' are among these, so the numbers compare with the CPU
#   runs; the name lets the tests find it through ADVKIT_SHARED_DATA),
# - data/weights/: the CIFAR ResNet weights,
# - whl/: wheels of the packages the device image lacks (ART, torchattacks).
#
#   bash tools/prepare_device_carry.sh [../shared/data]
#
# Then, with the device tool: run(command="bash tools/device_pending.sh", carry=["device-carry"],
# timeout_s=560). The carried folder is about 25 MiB, the repository about 13 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared/data}
out=device-carry
mkdir -p "$out/data/weights" "$out/whl"
python - "$shared/cifar10_test.npz" "$out/data/cifar10_test.npz" <<'PY'
import sys
import numpy as np

src, dst = sys.argv[1:]
with np.load(src) as z:
    y = z["y"]
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:500] for c in np.unique(y)]))
    np.savez(dst, **{k: z[k][keep] for k in z.files})
PY
cp "$shared"/weights/*.th "$out/data/weights/"
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$out/whl" \
    "adversarial-robustness-toolbox==$(python -c 'import art; print(art.__version__)')" \
    "torchattacks==3.5.1" 2>&1 | grep -v "is ignored: it is neither" || true
du -sh "$out"
