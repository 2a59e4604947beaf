#!/usr/bin/env bash
# Every check the issues ask of a GPU, sized for the borrowed H200 (<= 8 minutes, each phase under its own time
# budget) and for its image: Python 3.12 with jax 0.11.2 + CUDA 13, torch 2.11, flax, optax, transformers 5,
# tiktoken and pytest already there; the rest comes as the small wheelhouse .whl/ (benchmarks/build_wheelhouse.sh).
#   1. parity: jaxformers on the GPU against the PyTorch references (fp32 at "highest" matmul precision, set by
#      tests/conftest.py, and the bf16-vs-fp32 tolerance tests)                                     [150 s]
#   2. the speed table, jaxformers and PyTorch side by side in one run (benchmarks/run.py --suite gpu): BERT-base
#      train b32 s128, BERT-large QA train b24 s384, BERT-base inference b256 s128, GPT-2 small greedy decoding
#      b1 256 tokens, the first step with compilation                                               [240 s]
#   3. examples/run_classifier.py on an MRPC-shaped task in bf16: steps/s and peak memory (finetune_glue.py) [60 s]
# Everything lands in one folder: summary.txt, versions.txt, *.log, parity.xml, suite_<workload>.json (each with its
# table in suite_<workload>.log), finetune.json.
#
# Usage: bash benchmarks/gpu_check.sh [OUTPUT_DIR]          (default $OUT/gpu-check, else benchmarks/results/...)
#        bash benchmarks/gpu_check.sh --smoke [OUTPUT_DIR]  the same phases with tiny configs, on any device (CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
out=${1:-${OUT:-benchmarks/results}/gpu-check$([ $smoke = 1 ] && echo -smoke)-$(date +%F)}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# jax and torch share the GPU inside one process in the parity tests: no 75% up-front reservation by XLA.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site \
    .whl/*.whl || exit 2
  export PYTHONPATH="$PWD:/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
vocab_args=()
[ -f .whl/vocab.txt ] && vocab_args=(--vocab_file .whl/vocab.txt)
status=0

# phase NAME SECONDS COMMAND...: run with a time budget, log to NAME.log, one line to summary.txt.
phase() {
  local name=$1 budget=$2 started rc
  shift 2
  started=$(date +%s)
  timeout --kill-after=15 "$budget" "$@" >"$out/$name.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  echo "$name: exit $rc after $(( $(date +%s) - started )) s (budget ${budget} s)" | tee -a "$out/summary.txt"
}

"$python" - >"$out/versions.txt" 2>&1 <<'PY'
import importlib, platform
print("python", platform.python_version())
for name in ("jax", "jaxlib", "flax", "optax", "torch", "transformers", "tiktoken", "pytorch_pretrained_bert",
             "pytorch_transformers", "jaxformers"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as error:  # report, do not stop: the phases say what breaks
        print(name, "MISSING:", error)
import jax
print("jax devices", jax.devices())
import torch
print("torch cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
cat "$out/versions.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv >"$out/nvidia-smi.csv" 2>&1 || true
if [ $smoke = 0 ] && ! "$python" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
  echo "jax does not see a GPU (see $out/versions.txt); use --smoke to check the code paths on CPU" >&2
  exit 2
fi

parity_tests=(tests/test_bert_parity.py tests/test_gpt2_parity.py tests/test_openai_gpt_parity.py)
parity_args=()
# 16 CPU cores there: the PyTorch references (CPU) and the XLA compilations run 4 test processes at a time.
"$python" -c "import xdist" 2>/dev/null && parity_args=(-n 4)
budgets=(140 0 60)  # parity, (speed table: workload_budgets), run_classifier: 450 s in all, under 8 minutes
# Speed table: one run.py call per workload (each its own JSON), so a slow one costs only its own budget.
workloads=(bert_base_train bert_large_qa_train bert_base_infer gpt2_decode first_step_bert_base)
workload_budgets=(60 80 40 35 35)  # 250 s in all
suite_args=(--repeats 20 --warmup 5)
finetune_args=(--epochs 1 --pad_to max_seq_length)
if [ $smoke = 1 ]; then
  suite_args=(--tiny --repeats 1)
  workload_budgets=(300 300 300 300 300)
  finetune_args=(--model tiny --train_rows 64 --epochs 1 --max_seq_length 32 --pad_to max_seq_length)
  parity_tests=(tests/test_bert_parity.py -k "bf16 or gradients or every_layer")
  budgets=(1200 0 600)  # code paths, not speed: a busy 2-core machine may be slow
  parity_args=()
fi
phase parity "${budgets[0]}" "$python" -m pytest -q -p no:cacheprovider -p no:randomly "${parity_args[@]}" \
  --junitxml="$out/parity.xml" "${parity_tests[@]}"
for i in "${!workloads[@]}"; do
  name=${workloads[$i]}
  phase "suite_$name" "${workload_budgets[$i]}" "$python" benchmarks/run.py --suite gpu --only "$name" \
    "${suite_args[@]}" --output "$out/suite_$name.json"
done
phase finetune "${budgets[2]}" "$python" benchmarks/finetune_glue.py "${finetune_args[@]}" "${vocab_args[@]}" \
  --output "$out/finetune.json"
echo "results in $out (exit status $status)"
cat "$out/summary.txt"
exit $status
