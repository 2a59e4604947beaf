#!/usr/bin/env bash
# Every check the issues ask of a GPU machine, in one run (about 20 minutes on one H100):
#   1. the parity suites with jaxformers on the GPU (fp32 at "highest" matmul precision, set by tests/conftest.py,
#      plus the bf16-vs-fp32 tolerance tests), against the reference on the CPU;
#   2. examples/run_classifier.py on an MRPC-shaped task in bf16: steps/s and peak memory (benchmarks/finetune_glue.py);
#   3. the GPU benchmark suite, jaxformers and the 0.6.2 reference side by side (benchmarks/run.py --suite gpu).
# Needs CUDA builds of jax and torch in the active environment (see benchmarks/README.md, "Setting up a GPU machine").
# Usage: bash benchmarks/gpu_check.sh [OUTPUT_DIR]    (default benchmarks/results/gpu-check-<date>)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu-check-$(date +%F)}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
status=0

python -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  2>&1 | tee "$out/devices.txt"
if ! python -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
  echo "jax does not see a GPU: install jax[cuda12] (see benchmarks/README.md)" >&2
  exit 2
fi

python -m pytest -q -p no:cacheprovider --junitxml="$out/parity.xml" \
  tests/test_bert_parity.py tests/test_gpt2_parity.py tests/test_openai_gpt_parity.py \
  tests/test_transfo_xl_parity.py tests/test_minilm_real.py tests/test_bert_pruning.py 2>&1 | tee "$out/parity.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

python benchmarks/finetune_glue.py --epochs 1 --output "$out/finetune_glue.json" 2>&1 | tail -n 5 | tee "$out/finetune_glue.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

python benchmarks/run.py --suite gpu --output "$out/gpu_suite.json" 2>&1 | tee "$out/gpu_suite.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "results in $out (exit status $status)"
exit $status
