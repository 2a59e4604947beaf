"""The GPU suite (benchmarks/run.py --suite gpu): the workloads of issue 7's GPU table. Each workload runs in a
fresh subprocess (so peak memory and first-step times belong to that workload alone) and times jaxformers and
the 0.6.2 PyTorch reference on the same device. Everything also runs on CPU with --tiny (small configs) so the
code paths can be checked anywhere."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from gpu_harness import Devices, GpuOptions, Progress, _count_params, _figure, _ratios, _release_torch_memory, \
    _summarise, first_call, timed_steps


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


def bert_flops(sizes: dict, batch: int, seq: int, head: str, train: bool) -> int:
    """FLOPs of one BERT forward (x3 for a train step), see FLOP_FORMULA."""
    d, layers, d_ff = sizes["hidden_size"], sizes["num_hidden_layers"], sizes["intermediate_size"]
    per_token_head = 2 * d if head == "qa" else 0
    per_sequence_head = d * d + 2 * d if head == "classification" else 0
    matmul_params = layers * (4 * d * d + 2 * d * d_ff) + per_token_head
    tokens = batch * seq
    forward = 2 * matmul_params * tokens + 4 * layers * seq * d * tokens + 2 * per_sequence_head * batch
    return 3 * forward if train else forward


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


def measure_side(progress: Progress, side: str, one_step: Callable[[], object], sync: Callable[[object], None],
                 options: GpuOptions, share: float, first: str, timed: str, first_only: bool = False) -> None:
    """One library's first call (compilation included for jax) and, unless ``first_only``, its timed steps within
    its share of the budget, each recorded under ``side`` as it completes."""
    progress.stage(f"{side}: first {first}")
    progress.record(side, {"first_step_s": round(first_call(one_step, sync), 3)})
    if not first_only:
        progress.stage(f"{side}: timing {timed}")
        progress.record(side, _summarise(timed_steps(one_step, sync, options.warmup, options.repeats, progress, side,
                                                     progress.cap(share))))


def jax_bert_train(devices: Devices, progress: Progress, head: str, sizes: dict, batch: int, seq: int,
                   options: GpuOptions, first_only: bool, share: float) -> dict:
    """jaxformers: Precision + optax.adamw (or BertAdam) through the training engine, state donated. ``share``:
    the fraction of the budget left after compilation that the measurement may use."""
    progress.stage("jaxformers: importing, building the model and train state")
    import gc

    import jax
    import optax

    from jaxformers.optimization import BertAdam
    from jaxformers.training import Precision, create_train_state, make_mesh, make_train_step

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
    progress.record("jaxformers", {"params": _count_params(state.params), "init_s": round(time.perf_counter() - started, 2)})
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = step(holder["state"], batch_arrays)
        return metrics["loss"]

    measure_side(progress, "jaxformers", one_step, devices.jax_sync, options, share, "train step (compilation)",
                 "train steps", first_only)
    if not first_only:
        loss = float(one_step())
        if not np.isfinite(loss):
            raise FloatingPointError(f"jaxformers {head} train loss is {loss}")
        progress.record("jaxformers", {"loss": round(loss, 4)})
    progress.record("jaxformers", {"peak_memory_gb": devices.jax_peak_gb()})
    return progress.result["jaxformers"]


def torch_bert_train(devices: Devices, progress: Progress, head: str, sizes: dict, batch: int, seq: int,
                     options: GpuOptions, first_only: bool, share: float) -> dict:
    """The 0.6.2 reference: bf16 autocast + fused AdamW on CUDA, plain fp32 AdamW on CPU (or autocast with
    --precision bf16)."""
    progress.stage("torch: building the model and optimizer")
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
    progress.record("torch", {"params": sum(p.numel() for p in model.parameters()),
                              "init_s": round(time.perf_counter() - started, 2)})

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

    measure_side(progress, "torch", one_step, devices.torch_sync, options, share, "train step", "train steps",
                 first_only)
    if not first_only:
        progress.record("torch", {"loss": round(float(one_step().detach()), 4)})
    progress.record("torch", {"peak_memory_gb": devices.torch_peak_gb()})
    return progress.result["torch"]


def jax_bert_infer(devices: Devices, progress: Progress, sizes: dict, batch: int, seq: int,
                   options: GpuOptions, share: float) -> dict:
    """Classification logits in the compute dtype (parameters cast once, as a deployed model would be)."""
    progress.stage("jaxformers: importing, building the model")
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

    progress.record("jaxformers", {"params": _count_params(state)})
    measure_side(progress, "jaxformers", one_step, devices.jax_sync, options, share, "forward (compilation)",
                 "forwards")
    progress.record("jaxformers", {"peak_memory_gb": devices.jax_peak_gb()})
    return progress.result["jaxformers"]


def torch_bert_infer(devices: Devices, progress: Progress, sizes: dict, batch: int, seq: int,
                     options: GpuOptions, share: float) -> dict:
    progress.stage("torch: building the model")
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

    progress.record("torch", {"params": sum(p.numel() for p in model.parameters())})
    measure_side(progress, "torch", one_step, devices.torch_sync, options, share, "forward", "forwards")
    progress.record("torch", {"peak_memory_gb": devices.torch_peak_gb()})
    return progress.result["torch"]


def jax_gpt2_decode(devices: Devices, progress: Progress, sizes: dict, prompt: np.ndarray, new_tokens: int,
                    options: GpuOptions, repeats: int, share: float) -> dict:
    """``jaxformers.generate``: prefill + a while_loop of one-token steps over a static KV cache, one program."""
    progress.stage("jaxformers: importing, building the model")
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

    progress.record("jaxformers", {"params": _count_params(nnx.state(model, nnx.Param))})
    progress.stage("jaxformers: first generate call (compilation)")
    progress.record("jaxformers", {"first_call_s": round(first_call(one_call, lambda _: None), 3)})
    progress.stage("jaxformers: timing generate calls")
    timing = timed_steps(one_call, lambda _: None, min(options.warmup, 2), repeats, progress, "jaxformers",
                         progress.cap(share))
    progress.record("jaxformers", {"ms_per_call": round(timing["median_s"] * 1e3, 3),
                                   "measured_calls": timing["measured_steps"], "peak_memory_gb": devices.jax_peak_gb()})
    return progress.result["jaxformers"]


def torch_gpt2_decode(devices: Devices, progress: Progress, sizes: dict, prompt: np.ndarray, new_tokens: int,
                      options: GpuOptions, repeats: int, share: float) -> dict:
    """The reference's own incremental decoding: feed the argmax token back with ``past=``."""
    progress.stage("torch: building the model")
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

    progress.record("torch", {"params": sum(p.numel() for p in model.parameters())})
    progress.stage("torch: first decoding call")
    progress.record("torch", {"first_call_s": round(first_call(one_call, devices.torch_sync), 3)})
    progress.stage("torch: timing decoding calls")
    timing = timed_steps(one_call, devices.torch_sync, min(options.warmup, 2), repeats, progress, "torch",
                         progress.cap(share))
    progress.record("torch", {"ms_per_call": round(timing["median_s"] * 1e3, 3),
                              "measured_calls": timing["measured_steps"], "peak_memory_gb": devices.torch_peak_gb()})
    return progress.result["torch"]


def train_scaling(devices: Devices, progress: Progress, options: GpuOptions) -> dict:
    """BERT-base classification train step over sequence length x batch size, both libraries.

    Every torch point runs first and hands its memory back; then the jaxformers points, smallest first (JAX's
    allocator keeps what it has taken, so its peak memory is the largest so far, which is this point's when
    the points grow). Fewer steps per point (at most 10 timed, 3 warm-up) keep the grid's run short. Each point
    has its own progress account (stdout only); finished points go into this workload's partial JSON.
    """
    sizes, seqs, batches = TRAIN_SCALING[1] if options.tiny else TRAIN_SCALING[0]
    options = dataclasses.replace(options, repeats=max(1, min(options.repeats, 10)), warmup=min(options.warmup, 3))
    points = sorted(((batch, seq) for seq in seqs for batch in batches), key=lambda point: (point[0] * point[1], point[1]))
    share = 1.0 / (2 * len(points))  # each side of each point gets an equal slice of what is left
    theirs = {}
    for batch, seq in points:
        point_progress = Progress(f"{progress.name} b{batch}_s{seq}", deadline=progress.deadline)
        theirs[batch, seq] = torch_bert_train(devices, point_progress, "classification", sizes, batch, seq, options,
                                              False, share)
        _release_torch_memory()
    config = {**sizes, "head": "classification", "seqs": list(seqs), "batches": list(batches),
              "repeats": options.repeats, "warmup": options.warmup}
    progress.record("config", config)
    for batch, seq in points:
        point_progress = Progress(f"{progress.name} b{batch}_s{seq}", deadline=progress.deadline)
        ours = jax_bert_train(devices, point_progress, "classification", sizes, batch, seq, options, False, share)
        flops = bert_flops(sizes, batch, seq, "classification", train=True)
        for side in (ours, theirs[batch, seq]):
            side["tflops"] = _figure(flops / (side["ms_per_step"] / 1e3) / 1e12)
            side["tokens_per_s"] = _figure(batch * seq / (side["ms_per_step"] / 1e3))
        point = {"batch": batch, "seq": seq, "flops_per_step": flops, "jaxformers": ours, "torch": theirs[batch, seq],
                 **_ratios(ours["ms_per_step"], theirs[batch, seq]["ms_per_step"])}
        progress.record("points", {f"b{batch}_s{seq}": point})
    return {"config": config, "points": progress.result["points"]}


def _gpt2_decode(devices: Devices, progress: Progress, options: GpuOptions) -> dict:
    sizes, prompt_len, new_tokens = GPT2_WORKLOAD[1] if options.tiny else GPT2_WORKLOAD[0]
    prompt = np.random.RandomState(0).randint(0, GPT2_VOCAB, (1, prompt_len)).astype(np.int32)
    progress.record("config", {**sizes, "batch": 1, "prompt_tokens": prompt_len, "new_tokens": new_tokens,
                               "greedy": True})
    # A call decodes all the new tokens, so fewer repeats suffice.
    repeats = max(1, min(options.repeats, 5))
    theirs = torch_gpt2_decode(devices, progress, sizes, prompt, new_tokens, options, repeats, share=0.2)
    _release_torch_memory()
    ours = jax_gpt2_decode(devices, progress, sizes, prompt, new_tokens, options, repeats, share=0.8)
    bytes_per_value = 2 if options.precision == "bf16" else 4
    # Every new token reads all weights once except the position table (one row); KV cache not counted.
    weight_bytes = (ours["params"] - 1024 * sizes["n_embd"]) * bytes_per_value
    for side in (ours, theirs):
        side["tokens_per_s"] = _figure(new_tokens / (side["ms_per_call"] / 1e3))
        side["weight_read_GBps"] = _figure(weight_bytes * side["tokens_per_s"] / 1e9)
    return {"config": progress.result["config"], "jaxformers": ours, "torch": theirs,
            **_ratios(ours["ms_per_call"], theirs["ms_per_call"])}


def _bert_infer(devices: Devices, progress: Progress, options: GpuOptions, sizes: dict, batch: int, seq: int,
                config: dict) -> dict:
    flops = bert_flops(sizes, batch, seq, "classification", train=False)
    theirs = torch_bert_infer(devices, progress, sizes, batch, seq, options, share=0.2)
    _release_torch_memory()
    ours = jax_bert_infer(devices, progress, sizes, batch, seq, options, share=0.8)
    for side in (ours, theirs):
        side["sequences_per_s"] = _figure(batch / (side["ms_per_step"] / 1e3))
        side["tflops"] = _figure(flops / (side["ms_per_step"] / 1e3) / 1e12)
    return {"config": config, "flops_per_step": flops, "jaxformers": ours, "torch": theirs,
            **_ratios(ours["ms_per_step"], theirs["ms_per_step"])}


def _bert_train(devices: Devices, progress: Progress, options: GpuOptions, name: str, config: dict) -> dict:
    head, full, tiny = BERT_WORKLOADS[name]
    sizes, batch, seq = tiny if options.tiny else full
    first_only = name.startswith("first_step")
    config["optimizer"] = {"jaxformers": options.optimizer, "torch": "AdamW" + (" (fused)" if devices.on_gpu else "")}
    args = (head, sizes, batch, seq, options, first_only)
    if first_only:
        # jaxformers first: its first step must not profit from CUDA libraries torch already loaded.
        ours = jax_bert_train(devices, progress, *args, share=0.8)
        theirs = torch_bert_train(devices, progress, *args, share=0.8)
        return {"config": config, "jaxformers": ours, "torch": theirs,
                **_ratios(ours["first_step_s"], theirs["first_step_s"])}
    # torch measures in a fifth of the budget left at that point: jaxformers must still build and compile.
    theirs = torch_bert_train(devices, progress, *args, share=0.2)
    _release_torch_memory()
    ours = jax_bert_train(devices, progress, *args, share=0.8)
    flops = bert_flops(sizes, batch, seq, head, train=True)
    for side in (ours, theirs):
        side["tflops"] = _figure(flops / (side["ms_per_step"] / 1e3) / 1e12)
    return {"config": config, "flops_per_step": flops, "jaxformers": ours, "torch": theirs,
            **_ratios(ours["ms_per_step"], theirs["ms_per_step"])}


def run_gpu_workload(name: str, options: GpuOptions, progress: Progress | None = None) -> dict:
    """One workload, both libraries, in this process. The reference runs first (see _release_torch_memory),
    except in the first-step workloads, where jaxformers goes first so that its compile time is a cold one.
    ``progress`` (default: stdout lines only, no deadline) receives every stage and figure as it happens."""
    progress = progress if progress is not None else Progress(name)
    progress.stage("initialising the devices")
    devices = Devices()
    if name == "train_scaling":
        return train_scaling(devices, progress, options)
    if name == "gpt2_decode":
        return _gpt2_decode(devices, progress, options)
    head, full, tiny = BERT_WORKLOADS[name]
    sizes, batch, seq = tiny if options.tiny else full
    config = {**sizes, "batch": batch, "seq": seq, "head": head}
    progress.record("config", config)
    if name == "bert_base_infer":
        return _bert_infer(devices, progress, options, sizes, batch, seq, config)
    return _bert_train(devices, progress, options, name, config)
