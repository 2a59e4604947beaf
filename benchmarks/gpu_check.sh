#!/usr/bin/env bash
# Every check the issues ask of a GPU, sized for the borrowed H200 (15 minutes of device time per task, 1-2 of them
# to start it): at most 470 s in all (wheel install and phases, one clock), plus at most 10 s of kill grace. Its
# image: Python 3.12 with jax 0.11.2 + CUDA 13, torch 2.11, flax, optax, transformers 5, tiktoken and pytest
# already there; the rest comes as the small wheelhouse .whl/ (benchmarks/build_wheelhouse.sh).
#
# The sizes come from the first run there (2026-11-29, every phase timed out): start-up + imports + model build
# is 15-20 s per process, and XLA's GPU compilation of a BERT-base train step 20-60 s. So the speed table runs
# first, each workload measures only a few steps (2 warm-up, 10 timed) and stops measuring when its share of the
# budget is spent (run.py --budget_s); parity runs a chosen subset after it; the fine-tuning run comes last.
#   phase                 budget  what
#   versions               30 s   Python, jax, torch, the references, devices; nvidia-smi
#   suite_bert_base_train  85 s   BERT-base classification train step b32 s128, jaxformers and torch side by side
#   suite_bert_base_infer  45 s   BERT-base inference b256 s128
#   suite_gpt2_decode      50 s   GPT-2 small greedy decoding, b1, 256 new tokens
#   suite_bert_large_qa_train 90 s  BERT-large SQuAD train step b24 s384
#   suite_first_step_bert_base 35 s  the first BERT-base train step with compilation, jaxformers before torch
#   parity                 70 s   fp32 at "highest" matmul precision (tests/conftest.py) and the bf16 tolerance
#                                 tests, BERT and GPT-2 (parity_tests below)
#   finetune               65 s   examples/run_classifier.py, BERT-base bf16 on an MRPC-shaped task: steps/s, memory
# A phase that ends early leaves its unused seconds to the next ones; none runs past the common 470 s limit
# (GPU_CHECK_LIMIT_S), and a phase with under 10 s left is skipped and says so.
# Every workload prints timestamped progress lines and rewrites its JSON after every stage, so a phase stopped by
# its budget leaves the figures it had ("partial": true, with the stage it was in). summary.txt is rewritten after
# every phase (benchmarks/gpu_summary.py): one line per phase ("ok", "timed out after N s ... at <stage>", what was
# measured), then the speed table.
# Everything lands in one folder: summary.txt, phases.tsv, versions.txt, nvidia-smi.csv, <phase>.log,
# suite_<workload>.json, parity-progress.json, parity.xml (when the parity phase ends), finetune.json.
#
# Usage: bash benchmarks/gpu_check.sh [OUTPUT_DIR]          (default $OUT/gpu-check, else benchmarks/results/...)
#        bash benchmarks/gpu_check.sh --smoke [OUTPUT_DIR]  the same phases with tiny configs, on any device (CPU)
# Environment: PYTHON (default python3); GPU_CHECK_LIMIT_S (all phases, default 470; --smoke 3600);
#        GPU_CHECK_PHASES="suite_bert_base_train parity" runs only those; GPU_CHECK_BUDGET_<phase>=S overrides one.
set -uo pipefail
cd "$(dirname "$0")/.."
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
out=${1:-${OUT:-benchmarks/results}/gpu-check$([ $smoke = 1 ] && echo -smoke)-$(date +%F)}
mkdir -p "$out"
rm -f "$out/phases.tsv" "$out/summary.txt"
python=${PYTHON:-python3}
clock_start=$(date +%s)
limit=${GPU_CHECK_LIMIT_S:-$([ $smoke = 1 ] && echo 3600 || echo 470)}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# jax and torch share the GPU inside one process in the parity tests: no 75% up-front reservation by XLA.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site \
    .whl/*.whl || exit 2
  export PYTHONPATH="$PWD:$PWD/benchmarks:/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
fi
vocab_args=()
[ -f .whl/vocab.txt ] && vocab_args=(--vocab_file .whl/vocab.txt)
status=0
# Seconds spent so far plus the nominal budgets of the phases run since: what a phase leaves unused carries over
# to the next ones (the wheel install counts against the common limit, not against the first phase).
planned=$(( $(date +%s) - clock_start ))

# phase NAME SECONDS COMMAND...: run under min(SECONDS + unused seconds so far, time left before the limit),
# log to NAME.log, add a row to phases.tsv and rewrite summary.txt. "{budget}" in COMMAND becomes the seconds
# granted minus 8 (the workload's own deadline: it stops measuring in time to write its figures).
phase() {
  local name=$1 nominal=$2 override started now budget left rc arg args=()
  shift 2
  if [ -n "${GPU_CHECK_PHASES:-}" ] && [[ " $GPU_CHECK_PHASES " != *" $name "* ]]; then return; fi
  override="GPU_CHECK_BUDGET_$name"
  nominal=${!override:-$nominal}
  now=$(date +%s)
  planned=$((planned + nominal))
  budget=$((clock_start + planned - now))        # nominal + whatever earlier phases left unused
  left=$((clock_start + limit - now))
  [ $budget -gt $left ] && budget=$left
  if [ $budget -lt 10 ]; then
    printf '%s\tskipped\t0\tonly %s s left of the %s s limit\n' "$name" "$left" "$limit" >>"$out/phases.tsv"
    "$python" benchmarks/gpu_summary.py "$out" >/dev/null
    status=1
    return
  fi
  for arg in "$@"; do args+=("${arg//\{budget\}/$((budget > 16 ? budget - 8 : budget / 2))}"); done
  started=$(date +%s)
  echo "[$(date +%T)] $name: budget $budget s" | tee "$out/$name.log"
  timeout --kill-after=10 "$budget" "${args[@]}" >>"$out/$name.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - started ))" "$budget" >>"$out/phases.tsv"
  "$python" benchmarks/gpu_summary.py "$out" | grep "^$name:"
}

# The speed table: one run.py call per workload (each its own JSON), most wanted first.
workloads=(bert_base_train bert_base_infer gpt2_decode bert_large_qa_train first_step_bert_base)
workload_budgets=(85 45 50 90 35)
suite_args=(--repeats 10 --warmup 2 --budget_s "{budget}")
# Parity: the fp32 tests at highest precision (outputs, losses, gradients, cached decoding) and the bf16 ones.
parity_tests=(tests/test_bert_parity.py::test_head_outputs_and_losses_match_reference
              tests/test_bert_parity.py::test_gradients_match_reference
              tests/test_bert_parity.py::test_bf16_compute_close_to_fp32
              tests/test_gpt2_parity.py::test_base_model_outputs_and_presents_match_reference
              tests/test_gpt2_parity.py::test_lm_head_loss_matches_reference
              tests/test_gpt2_parity.py::test_gradients_match_reference
              tests/test_gpt2_parity.py::test_cache_decoding_matches_uncached_reference
              tests/test_gpt2_parity.py::test_bf16_compute_and_cache_close_to_fp32)
parity_budget=70
finetune_args=(--epochs 1 --pad_to max_seq_length)
finetune_budget=65
versions_budget=30
if [ $smoke = 1 ]; then
  # Code paths, not speed: tiny configs, and budgets a busy 2-core machine can meet.
  suite_args=(--tiny --repeats 2 --warmup 1 --budget_s "{budget}")
  workload_budgets=(400 400 400 400 400)
  finetune_args=(--model tiny --train_rows 64 --epochs 1 --max_seq_length 32 --pad_to max_seq_length)
  parity_budget=900
  finetune_budget=600
  versions_budget=300
fi

phase versions "$versions_budget" "$python" - <<'PY'
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
[ -f "$out/versions.log" ] && cp "$out/versions.log" "$out/versions.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv >"$out/nvidia-smi.csv" 2>&1 || true
if [ $smoke = 0 ] && ! grep -q "jax devices \[Cuda" "$out/versions.txt" 2>/dev/null \
   && ! "$python" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
  echo "jax does not see a GPU (see $out/versions.txt); use --smoke to check the code paths on CPU" >&2
  exit 2
fi

for i in "${!workloads[@]}"; do
  name=${workloads[$i]}
  phase "suite_$name" "${workload_budgets[$i]}" "$python" benchmarks/run.py --suite gpu --only "$name" \
    "${suite_args[@]}" --output "$out/suite_$name.json"
done
export PYTEST_PROGRESS_JSON="$out/parity-progress.json"
phase parity "$parity_budget" "$python" -m pytest -q \
  -p no:cacheprovider -p no:randomly -p pytest_progress --junitxml="$out/parity.xml" "${parity_tests[@]}"
phase finetune "$finetune_budget" "$python" benchmarks/finetune_glue.py "${finetune_args[@]}" "${vocab_args[@]}" \
  --output "$out/finetune.json"
echo "results in $out (exit status $status, $(( $(date +%s) - clock_start )) s)"
cat "$out/summary.txt"
exit $status
