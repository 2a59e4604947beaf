"""``jaxformers plan``: will a training (or inference) step fit on a TPU slice, and how fast could it be?

No TPU is needed. With ``libtpu`` installed (``pip install 'jaxformers[tpu-plan]'``), JAX describes the devices of
a TPU topology on any machine (``jax.experimental.topologies``); the model is built abstractly (shapes only, no
weights) and its real jitted step, the one the training engine runs, is lowered with shardings over those
devices and compiled ahead of time by the TPU compiler. The compiled program's ``memory_analysis()`` gives the
per-device bytes (arguments, temporaries, outputs) and ``cost_analysis()`` the FLOPs and bytes moved per step.

The step-time estimate is a roofline: ``max(flops / peak bf16 FLOP/s, bytes / HBM bandwidth)`` per device, from
each chip's published figures (table :data:`CHIPS`). It is a lower bound: real steps also pay for collectives
between chips, host input and kernels that reach neither ceiling.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    """Published per-chip figures: dense bf16 peak FLOP/s, HBM capacity (bytes) and HBM bandwidth (bytes/s)."""

    name: str
    peak_bf16_flops: float
    hbm_bytes: int
    hbm_bandwidth: float


# Google Cloud's TPU system-architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e), per chip:
#   v4:  275 TFLOP/s bf16, 32 GiB HBM2,  1,200 GB/s
#   v5e: 197 TFLOP/s bf16, 16 GiB HBM2,    819 GB/s
#   v5p: 459 TFLOP/s bf16, 95 GiB HBM2e, 2,765 GB/s
#   v6e: 918 TFLOP/s bf16, 32 GiB HBM,   1,640 GB/s (Trillium)
CHIPS: dict[str, ChipSpec] = {
    "v4": ChipSpec("v4", 275e12, 32 * GIB, 1200e9),
    "v5e": ChipSpec("v5e", 197e12, 16 * GIB, 819e9),
    "v5p": ChipSpec("v5p", 459e12, 95 * GIB, 2765e9),
    "v6e": ChipSpec("v6e", 918e12, 32 * GIB, 1640e9),
}
# JAX's device_kind strings -> our chip names.
DEVICE_KINDS = {"TPU v4": "v4", "TPU v5 lite": "v5e", "TPU v5e": "v5e", "TPU v5": "v5p", "TPU v5p": "v5p",
                "TPU v6 lite": "v6e", "TPU v6e": "v6e"}
# Cloud slice names -> JAX topology strings. v4/v5p names count TensorCores (2 per chip), v5e/v6e names chips.
TOPOLOGIES = {
    "v4-8": "v4:2x2x1", "v4-16": "v4:2x2x2", "v4-32": "v4:2x2x4", "v4-64": "v4:2x4x4",
    "v5p-8": "v5p:2x2x1", "v5p-16": "v5p:2x2x2", "v5p-32": "v5p:2x2x4",
    "v5e-1": "v5e:1x1", "v5e-4": "v5e:2x2", "v5e-8": "v5e:2x4", "v5e-16": "v5e:4x4", "v5e-32": "v5e:4x8",
    "v6e-1": "v6e:1x1", "v6e-4": "v6e:2x2", "v6e-8": "v6e:2x4", "v6e-16": "v6e:4x4", "v6e-32": "v6e:4x8",
}
TASKS = ("classification", "qa", "multiple-choice", "pretraining", "lm", "infer", "decode")
EXIT_DOES_NOT_FIT = 3


class PlanError(ValueError):
    """A request ``plan`` cannot answer (unknown model, topology, task for the model...)."""


def quiet_libtpu_environment() -> None:
    """Without these, loading libtpu on a machine with no TPU prints metadata-server warnings and an
    INVALID_ARGUMENT trace to stderr (harmless: topology descriptions need none of it)."""
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_WORKER_ID", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ._platform import _has_tpu_chip

    if not _has_tpu_chip():  # no chip to share: let several planning processes load libtpu (its lockfile)
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


@dataclasses.dataclass
class Topology:
    name: str
    jax_name: str
    devices: list[Any]
    chip: ChipSpec
    devices_per_chip: int

    @property
    def hbm_bytes_per_device(self) -> int:
        return self.chip.hbm_bytes // self.devices_per_chip

    @property
    def peak_flops_per_device(self) -> float:
        return self.chip.peak_bf16_flops / self.devices_per_chip

    @property
    def bandwidth_per_device(self) -> float:
        return self.chip.hbm_bandwidth / self.devices_per_chip


def get_topology(name: str) -> Topology:
    """``v5e-8`` / ``v4-32`` ... or a JAX topology string (``v5e:2x4``) -> the slice's device descriptions."""
    quiet_libtpu_environment()
    try:
        from jax.experimental import topologies
    except ImportError as error:  # pragma: no cover - every supported jax has it
        raise PlanError(f"this jax has no jax.experimental.topologies: {error}") from error
    jax_name = TOPOLOGIES.get(name, name)
    try:
        description = topologies.get_topology_desc(platform="tpu", topology_name=jax_name)
    except Exception as error:  # libtpu missing, or a name it does not know
        raise PlanError(
            f"cannot describe TPU topology {name!r} ({jax_name!r}): {error}. Needs libtpu "
            f"(pip install 'jaxformers[tpu-plan]'); known names: {', '.join(TOPOLOGIES)} or JAX's 'v5e:2x4' form"
        ) from error
    devices = list(description.devices)
    kind = devices[0].device_kind
    if kind not in DEVICE_KINDS:
        raise PlanError(f"topology {name!r} has devices of kind {kind!r}, which has no published figures here")
    chips = {tuple(getattr(device, "coords", (index,))) for index, device in enumerate(devices)}
    return Topology(name, jax_name, devices, CHIPS[DEVICE_KINDS[kind]], max(1, len(devices) // len(chips)))


# ------------------------------------------------------------------------------------------------ the model

# Shortcut names -> config fields: the released checkpoints' shapes, so nothing is downloaded.
_BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
_BERT_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
_BERT_VOCABS = {"uncased": 30522, "cased": 28996, "multilingual-uncased": 105879, "multilingual-cased": 119547,
                "chinese": 21128, "german-cased": 30000}
SHORTCUTS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("gpt2", {}),
    "gpt2-medium": ("gpt2", {"n_embd": 1024, "n_layer": 24, "n_head": 16}),
}


def _bert_shortcuts() -> None:
    from .tokenizers.bert import BERT_PRETRAINED_MODELS

    for name in BERT_PRETRAINED_MODELS:
        size = _BERT_LARGE if "-large-" in name else _BERT_BASE
        vocab = next(v for key, v in sorted(_BERT_VOCABS.items(), key=lambda kv: -len(kv[0])) if f"-{key}" in name)
        SHORTCUTS.setdefault(name, ("bert", {**size, "vocab_size": vocab}))


def load_config(model: str) -> tuple[str, Any]:
    """MODEL (shortcut name, config JSON file or checkpoint directory) -> ``(family, config)``; family is
    ``"bert"`` or ``"gpt2"``. Nothing is downloaded and no weights are read."""
    from .models.bert import BertConfig
    from .models.gpt2 import GPT2Config

    _bert_shortcuts()
    classes = {"bert": BertConfig, "gpt2": GPT2Config}
    if model in SHORTCUTS:
        family, fields = SHORTCUTS[model]
        return family, classes[family].from_dict(fields)
    path = Path(model)
    if path.is_dir():
        names = ("config.json", "bert_config.json", "hparams.json")
        found = [path / name for name in names if (path / name).is_file()]
        if not found:
            raise PlanError(f"checkpoint directory {model!r} has no {' / '.join(names)}")
        path = found[0]
    if not path.is_file():
        raise PlanError(f"MODEL {model!r} is neither a known shortcut ({', '.join(sorted(SHORTCUTS))}), "
                        "a config file nor a checkpoint directory")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise PlanError(f"config file {str(path)!r} is not valid JSON: {error}") from error
    is_gpt2 = values.get("model_type") == "gpt2" or "n_embd" in values or "n_layer" in values
    family = "gpt2" if is_gpt2 else "bert"
    return family, classes[family].from_dict(values)


@dataclasses.dataclass
class PlanRequest:
    model: str
    task: str
    batch: int
    seq: int
    topology: str
    precision: str = "bf16"
    fsdp: bool = False
    model_parallel: int = 1
    remat: bool = False
    scan_layers: bool = False
    num_labels: int = 2
    num_choices: int = 4


def _model_class(family: str, task: str) -> tuple[type, dict[str, Any]]:
    from .models import bert, gpt2

    table = {
        ("bert", "classification"): (bert.BertForSequenceClassification, {"num_labels": None}),
        ("bert", "qa"): (bert.BertForQuestionAnswering, {}),
        ("bert", "multiple-choice"): (bert.BertForMultipleChoice, {"num_choices": None}),
        ("bert", "pretraining"): (bert.BertForPreTraining, {}),
        ("bert", "lm"): (bert.BertForMaskedLM, {}),
        ("bert", "infer"): (bert.BertModel, {}),
        ("gpt2", "lm"): (gpt2.GPT2LMHeadModel, {}),
        ("gpt2", "infer"): (gpt2.GPT2LMHeadModel, {}),
        ("gpt2", "decode"): (gpt2.GPT2LMHeadModel, {}),
    }
    if (family, task) not in table:
        tasks = sorted(t for f, t in table if f == family)
        raise PlanError(f"task {task!r} is not available for a {family} model; choose one of {tasks}")
    return table[(family, task)]


_LAYER_FIELDS = {"bert": "num_hidden_layers", "gpt2": "n_layer"}


def build_abstract_model(request: PlanRequest, num_layers: int | None = None) -> tuple[str, Any]:
    """The task's model, parameters as shapes only (no random numbers, nothing compiled); ``num_layers``
    overrides the depth (unrolled), for :func:`_scanned_cost`."""
    from .layers import build_abstract

    family, config = load_config(request.model)
    changes = {"remat": request.remat, "scan_layers": request.scan_layers}
    if num_layers is not None:
        changes.update({_LAYER_FIELDS[family]: num_layers, "scan_layers": False})
    config = dataclasses.replace(config, **changes)
    cls, kwargs = _model_class(family, request.task)
    kwargs = {key: getattr(request, key) for key in kwargs}
    model = build_abstract(lambda: cls(config, **kwargs))
    return family, model


# ------------------------------------------------------------------------------------------------ the step


def _batch_shapes(family: str, request: PlanRequest) -> dict[str, tuple[int, ...]]:
    """Every batch entry's shape (all int32) for the task, as the example scripts feed them."""
    rows, seq = request.batch, request.seq
    if family == "gpt2":
        return {"input_ids": (rows, 1 if request.task == "decode" else seq)}
    token = (rows, request.num_choices, seq) if request.task == "multiple-choice" else (rows, seq)
    shapes = {"input_ids": token, "segment_ids": token, "input_mask": token}
    extra = {
        "classification": {"labels": (rows,)},
        "qa": {"start_positions": (rows,), "end_positions": (rows,)},
        "multiple-choice": {"labels": (rows,)},
        "pretraining": {"lm_labels": (rows, seq), "is_next": (rows,)},
        "lm": {"lm_labels": (rows, seq)},
    }
    return {**shapes, **extra.get(request.task, {})}


def _loss_fn(family: str, task: str) -> Callable[[Any, dict[str, Any], Any], Any]:
    """``loss_fn(model, batch, dropout_rng) -> scalar``, the same losses the example scripts train."""
    from .layers import cross_entropy

    def loss(model: Any, batch: dict[str, Any], rng: Any) -> Any:
        if family == "gpt2":
            return model(batch["input_ids"], lm_labels=batch["input_ids"], dropout_rng=rng)
        inputs = (batch["input_ids"], batch["segment_ids"], batch["input_mask"])
        if task == "pretraining":
            return model(*inputs, batch["lm_labels"], batch["is_next"], dropout_rng=rng)
        if task == "lm":
            return model(*inputs, batch["lm_labels"], dropout_rng=rng)
        outputs = model(*inputs, dropout_rng=rng)
        if task == "qa":
            start, end = outputs  # [batch, seq] each
            return (cross_entropy(start, batch["start_positions"]) + cross_entropy(end, batch["end_positions"])) / 2
        return cross_entropy(outputs, batch["labels"])  # classification / multiple choice: [batch, classes]

    return loss


def _abstract(tree: Any, shardings: Any) -> Any:
    import jax

    return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                        tree, shardings)


def _make_mesh(request: PlanRequest, topology: Topology) -> Any:
    import inspect

    from .training.sharding import make_mesh

    count = len(topology.devices)
    if "model" not in inspect.signature(make_mesh).parameters:  # an engine without tensor parallelism
        if request.model_parallel != 1:
            raise PlanError(f"--model_parallel {request.model_parallel}: this training engine has no 'model' mesh "
                            "axis, so only --model_parallel 1 can be planned")
        return make_mesh(devices=topology.devices)
    if request.model_parallel < 1 or count % request.model_parallel:
        raise PlanError(f"--model_parallel {request.model_parallel} must divide the {count} devices of "
                        f"{request.topology}")
    return make_mesh(count // request.model_parallel, request.model_parallel, devices=topology.devices)


def _split_abstract(model: Any, precision: Any) -> tuple[Any, Any, Any, Any]:
    """``(train_graphdef, eval_graphdef, rest, params)`` with float32 parameter shapes (the master weights)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model.train()
    train_graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)

    def master(leaf: Any) -> Any:
        floating = jnp.issubdtype(leaf.dtype, jnp.floating)
        return jax.ShapeDtypeStruct(leaf.shape, jnp.float32 if floating else leaf.dtype)

    return train_graphdef, eval_graphdef, rest, jax.tree.map(master, params)


def lower_train_step(model: Any, family: str, request: PlanRequest, mesh: Any) -> Any:
    """The training engine's own jitted step (``make_train_step``: BertAdam, the task's loss, the precision and
    sharding flags), lowered on abstract state and batch for ``mesh``."""
    import jax
    import jax.numpy as jnp

    from .optimization import BertAdam
    from .training.precision import Precision
    from .training.sharding import batch_sharding, replicated, tree_shardings
    from .training.state import TrainContext, TrainState, make_train_step

    precision = Precision(request.precision)
    tx = BertAdam(5e-5, warmup=0.1, t_total=1000)
    train_graphdef, eval_graphdef, rest, params = _split_abstract(model, precision)
    opt_state = jax.eval_shape(tx.init, params)
    shardings = TrainState(step=replicated(mesh), params=tree_shardings(params, mesh, request.fsdp),
                           opt_state=tree_shardings(opt_state, mesh, request.fsdp), rng=replicated(mesh),
                           loss_scale=None)
    state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params, opt_state=opt_state,
                       rng=jax.eval_shape(lambda: jax.random.PRNGKey(0)), loss_scale=None)
    context = TrainContext(train_graphdef=train_graphdef, eval_graphdef=eval_graphdef, rest=rest, mesh=mesh,
                           state_shardings=shardings, precision=precision, fsdp=request.fsdp,
                           offload_optimizer=False)
    step = make_train_step(context, _loss_fn(family, request.task), tx, precision=precision)
    batch = {name: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=batch_sharding(mesh))
             for name, shape in _batch_shapes(family, request).items()}
    return step.jitted.lower(_abstract(state, shardings), batch)


def _rows_sharding(mesh: Any, rows: int, rank: int, axis: int = 0) -> Any:
    """Split dimension ``axis`` over the data axis when it divides evenly, else replicate (batch 1 decoding)."""
    from jax.sharding import NamedSharding, PartitionSpec

    from .training.sharding import DATA_AXIS

    if rows % mesh.shape[DATA_AXIS]:
        return NamedSharding(mesh, PartitionSpec())
    spec = [None] * rank
    spec[axis] = DATA_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def lower_inference_step(model: Any, family: str, request: PlanRequest, mesh: Any) -> Any:
    """A forward pass (``infer``) or one cached decoding step (``decode``, cache of ``--seq`` slots), with the
    weights stored in the compute dtype as a server would hold them."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from .training.precision import Precision
    from .training.sharding import replicated, tree_shardings

    dtype = Precision(request.precision).dtype
    _, graphdef, rest, params = _split_abstract(model, None)
    params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, dtype if p.dtype == jnp.float32 else p.dtype),
                          params)
    params = _abstract(params, tree_shardings(params, mesh, request.fsdp))
    shapes = _batch_shapes(family, request)
    batch = {name: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=_rows_sharding(mesh, shape[0], len(shape)))
             for name, shape in shapes.items()}

    if request.task == "decode":
        cache = jax.eval_shape(lambda: model.init_cache(request.batch, request.seq, dtype))
        cache_shardings = type(cache)(*(_rows_sharding(mesh, request.batch, len(leaf.shape), axis=1)
                                        if leaf.ndim else replicated(mesh) for leaf in cache))
        cache = _abstract(cache, cache_shardings)

        def decode(params: Any, cache: Any, ids: Any) -> Any:
            return nnx.merge(graphdef, params, rest).decode_step(ids, cache)

        return jax.jit(decode, donate_argnums=(1,)).lower(params, cache, batch["input_ids"])

    def forward(params: Any, batch: dict[str, Any]) -> Any:
        merged = nnx.merge(graphdef, params, rest)
        if family == "gpt2":
            return merged(batch["input_ids"])[0]
        return merged(batch["input_ids"], batch["segment_ids"], batch["input_mask"], output_all_encoded_layers=False)

    return jax.jit(forward).lower(params, batch)


# ------------------------------------------------------------------------------------------------ the report


def _cost(compiled: Any) -> dict[str, float]:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    return dict(cost or {})


def _suggestion(request: PlanRequest, topology: Topology, total: int) -> str:
    """The cheapest change likely to make it fit, in the order that costs the least speed."""
    hints = []
    if not request.fsdp and len(topology.devices) > 1:
        hints.append("--fsdp (shard parameters and optimizer state over the devices)")
    if not request.remat and request.task not in ("infer", "decode"):
        hints.append("--remat (recompute activations in the backward pass)")
    ratio = topology.hbm_bytes_per_device / max(total, 1)
    smaller = max(1, int(request.batch * ratio * 0.9) // len(topology.devices) * len(topology.devices))
    hints.append(f"a smaller --batch (about {smaller} by a linear estimate)")
    return "try " + "; or ".join(hints)


def plan(request: PlanRequest) -> dict[str, Any]:
    """Compile the step of ``request`` for its TPU topology ahead of time; return the JSON report (see
    :func:`format_table` for the fields)."""
    import time

    import jax

    from . import attention as attention_kernels

    if request.task not in TASKS:
        raise PlanError(f"unknown task {request.task!r}; choose one of {', '.join(TASKS)}")
    if request.precision not in ("bf16", "fp32"):
        raise PlanError(f"--precision {request.precision!r}: choose bf16 or fp32")
    if request.batch < 1 or request.seq < 1:
        raise PlanError(f"--batch ({request.batch}) and --seq ({request.seq}) must be positive")
    topology = get_topology(request.topology)
    mesh = _make_mesh(request, topology)
    data_ways = len(topology.devices) // request.model_parallel
    if request.task not in ("infer", "decode") and request.batch % data_ways:
        raise PlanError(f"--batch {request.batch} does not split over the {data_ways} data-parallel groups of "
                        f"{request.topology}: use a multiple of {data_ways}")
    family, model = build_abstract_model(request)
    max_positions = getattr(model.config, "max_position_embeddings", getattr(model.config, "n_positions", None))
    if max_positions and request.seq > max_positions:
        raise PlanError(f"--seq {request.seq} exceeds the model's {max_positions} position embeddings")
    lower = lower_inference_step if request.task in ("infer", "decode") else lower_train_step
    started = time.perf_counter()
    with attention_kernels.target_platform("tpu", mesh) as used:
        lowered = lower(model, family, request, mesh)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - started
    cost = _cost(compiled)
    if request.scan_layers:
        cost = _scanned_cost(request, mesh, lower, getattr(model.config, _LAYER_FIELDS[family]))
    return _report(request, topology, compiled, cost, sorted(used), compile_s, jax.__version__)


def _scanned_cost(request: PlanRequest, mesh: Any, lower: Callable, num_layers: int) -> dict[str, float]:
    """XLA's cost analysis counts a loop body once, so a step scanned over its layers reports one layer's
    FLOPs. The layers are identical: compile the same step unrolled at 1 and 2 layers and extrapolate."""
    from . import attention as attention_kernels

    costs = []
    for layers in (1, 2):
        family, model = build_abstract_model(request, num_layers=layers)
        with attention_kernels.target_platform("tpu", mesh):
            costs.append(_cost(lower(model, family, request, mesh).compile()))
    return {key: costs[0].get(key, 0.0) + (num_layers - 1) * (costs[1].get(key, 0.0) - costs[0].get(key, 0.0))
            for key in ("flops", "bytes accessed")}


def _report(request: PlanRequest, topology: Topology, compiled: Any, cost: dict[str, float], kernels: list[str],
            compile_s: float, jax_version: str) -> dict[str, Any]:
    memory = compiled.memory_analysis()
    per_device = {
        "arguments": int(memory.argument_size_in_bytes),
        "temporaries": int(memory.temp_size_in_bytes),
        "outputs": int(memory.output_size_in_bytes),
        "aliased": int(memory.alias_size_in_bytes),  # outputs written over donated arguments: counted once
        "code": int(memory.generated_code_size_in_bytes),
    }
    total = sum(per_device[key] for key in ("arguments", "temporaries", "outputs", "code")) - per_device["aliased"]
    per_device["total"] = total
    flops = float(cost.get("flops", 0.0))  # per device: XLA analyses the partitioned (per-device) program
    moved = float(cost.get("bytes accessed", 0.0))
    compute_s, memory_s = flops / topology.peak_flops_per_device, moved / topology.bandwidth_per_device
    fits = total <= topology.hbm_bytes_per_device
    report = {
        "model": request.model, "task": request.task, "batch": request.batch, "seq": request.seq,
        "precision": request.precision, "fsdp": request.fsdp, "remat": request.remat,
        "scan_layers": request.scan_layers, "model_parallel": request.model_parallel,
        "topology": request.topology, "jax_topology": topology.jax_name, "chip": topology.chip.name,
        "devices": len(topology.devices), "devices_per_chip": topology.devices_per_chip,
        "fits": fits, "per_device_memory_bytes": per_device, "hbm_bytes_per_device": topology.hbm_bytes_per_device,
        "flops_per_step": flops * len(topology.devices), "flops_per_device": flops,
        "bytes_accessed_per_device": moved, "estimated_step_ms": 1e3 * max(compute_s, memory_s),
        "bound": "compute" if compute_s >= memory_s else "memory",
        "peak_bf16_flops_per_chip": topology.chip.peak_bf16_flops,
        "hbm_bandwidth_per_chip": topology.chip.hbm_bandwidth,
        "attention": ", ".join(kernels) or "none", "compile_s": round(compile_s, 2), "jax": jax_version,
    }
    if not fits:
        report["suggestion"] = _suggestion(request, topology, total)
    return report


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def format_table(report: dict[str, Any]) -> str:
    """The report as aligned ``name  value`` lines."""
    memory = report["per_device_memory_bytes"]
    rows = [
        ("model / task", f"{report['model']} / {report['task']} (batch {report['batch']}, seq {report['seq']}, "
                         f"{report['precision']})"),
        ("flags", ", ".join(f for f in ("fsdp", "remat", "scan_layers") if report[f]) or "-"),
        ("topology", f"{report['topology']} ({report['jax_topology']}): {report['devices']} devices, "
                     f"TPU {report['chip']}"),
        ("fits", "yes" if report["fits"] else "NO"),
        ("memory per device", f"{_gib(memory['total'])} of {_gib(report['hbm_bytes_per_device'])} HBM"),
        ("  arguments", _gib(memory["arguments"])),
        ("  temporaries", _gib(memory["temporaries"])),
        ("  outputs (aliased)", f"{_gib(memory['outputs'])} ({_gib(memory['aliased'])})"),
        ("FLOPs per step", f"{report['flops_per_step']:.3e} ({report['flops_per_device']:.3e} per device)"),
        ("bytes per device", f"{report['bytes_accessed_per_device']:.3e}"),
        ("estimated step", f"{report['estimated_step_ms']:.2f} ms ({report['bound']}-bound roofline)"),
        ("attention", report["attention"]),
        ("compile", f"{report['compile_s']:.1f} s on this machine (jax {report['jax']})"),
    ]
    if "suggestion" in report:
        rows.append(("suggestion", report["suggestion"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# ------------------------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``plan`` subcommand's arguments."""
    parser.add_argument("model", help="shortcut name (bert-base-uncased, gpt2...), config JSON file or checkpoint "
                                      "directory (only its config is read)")
    parser.add_argument("--task", required=True, choices=TASKS, help="the step to plan: " + ", ".join(TASKS))
    parser.add_argument("--batch", type=int, required=True, help="global batch size (all devices)")
    parser.add_argument("--seq", type=int, required=True, help="sequence length (decode: cache length)")
    parser.add_argument("--topology", required=True,
                        help=f"TPU slice: {', '.join(TOPOLOGIES)}, or JAX's own form such as v5e:2x4")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                        help="compute precision of the step (default bf16)")
    parser.add_argument("--fsdp", action="store_true", help="shard parameters and optimizer state")
    parser.add_argument("--model_parallel", type=int, default=1,
                        help="tensor-parallel ways (only 1 until the engine has a model axis)")
    parser.add_argument("--remat", action="store_true", help="recompute activations in the backward pass")
    parser.add_argument("--scan_layers", action="store_true", help="run the layers as one scanned module")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the plan; exit status 0 when it fits, 3 when it does not, 2 on a request that cannot be planned."""
    request = PlanRequest(model=args.model, task=args.task, batch=args.batch, seq=args.seq,
                          topology=args.topology, precision=args.precision, fsdp=args.fsdp,
                          model_parallel=args.model_parallel, remat=args.remat, scan_layers=args.scan_layers)
    try:
        report = plan(request)
    except PlanError as error:
        print(f"jaxformers plan: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0 if report["fits"] else EXIT_DOES_NOT_FIT


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="jaxformers plan", description=__doc__))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
