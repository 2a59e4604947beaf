#!/usr/bin/env python3
"""Extract per-token feature vectors from chosen BERT layers, as JSON lines (pytorch-pretrained-bert 0.6.x
``examples/extract_features.py``, with the forward pass compiled by JAX).

Each input line is one example; ``text_a ||| text_b`` makes a sentence pair. Each output line is
``{"linex_index": i, "features": [{"token": ..., "layers": [{"index": l, "values": [...]}, ...]}, ...]}``
with values rounded to 6 decimals, exactly the reference's layout. ``--layers`` indexes the encoder layers'
outputs (``-1`` is the last layer).

Like the reference, the model is called without segment ids (every token gets segment 0, also in pairs), so
the vectors match the reference script's output for the same weights.

    python examples/extract_features.py --input_file input.txt --output_file output.jsonl \\
        --bert_model bert-base-uncased --do_lower_case --layers=-1,-2,-3,-4 --max_seq_length 128
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
from typing import Iterator, Sequence

import numpy as np

logger = logging.getLogger("extract_features")

PAIR_SEPARATOR = re.compile(r"^(.*) \|\|\| (.*)$")


@dataclasses.dataclass
class InputExample:
    unique_id: int
    text_a: str
    text_b: str | None


@dataclasses.dataclass
class InputFeatures:
    unique_id: int
    tokens: list[str]
    input_ids: list[int]
    input_mask: list[int]
    input_type_ids: list[int]


def read_examples(input_file: str) -> list[InputExample]:
    """One example per line; ``a ||| b`` splits a line into a sentence pair. Ids count lines from 0."""
    examples = []
    with open(input_file, encoding="utf-8") as reader:
        for unique_id, line in enumerate(reader):
            line = line.strip()
            match = PAIR_SEPARATOR.match(line)
            if match is None:
                examples.append(InputExample(unique_id, line, None))
            else:
                examples.append(InputExample(unique_id, match.group(1), match.group(2)))
    return examples


def truncate_pair(tokens_a: list[str], tokens_b: list[str], max_length: int) -> None:
    """Drop tokens from the end of the longer sequence until the pair fits (in place)."""
    while len(tokens_a) + len(tokens_b) > max_length:
        (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()


def convert_examples_to_features(examples: Sequence[InputExample], seq_length: int, tokenizer) -> list[InputFeatures]:
    """``[CLS] a [SEP] (b [SEP])`` padded with id 0 to ``seq_length``; segment ids 0 for a, 1 for b."""
    features = []
    for index, example in enumerate(examples):
        tokens_a = tokenizer.tokenize(example.text_a)
        tokens_b = tokenizer.tokenize(example.text_b) if example.text_b else None
        if tokens_b:
            truncate_pair(tokens_a, tokens_b, seq_length - 3)
        else:
            tokens_a = tokens_a[: seq_length - 2]
        tokens = ["[CLS]", *tokens_a, "[SEP]"]
        type_ids = [0] * len(tokens)
        if tokens_b:
            tokens += [*tokens_b, "[SEP]"]
            type_ids += [1] * (len(tokens_b) + 1)
        input_ids = tokenizer.convert_tokens_to_ids(tokens)
        padding = seq_length - len(input_ids)
        feature = InputFeatures(
            unique_id=example.unique_id,
            tokens=tokens,
            input_ids=input_ids + [0] * padding,
            input_mask=[1] * len(input_ids) + [0] * padding,
            input_type_ids=type_ids + [0] * padding,
        )
        if index < 5:
            logger.info("*** Example %d ***\ntokens: %s\ninput_ids: %s", example.unique_id, " ".join(tokens),
                        " ".join(map(str, feature.input_ids)))
        features.append(feature)
    return features


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """``"-1,-2"`` -> ``[-1, -2]``, each checked against the model depth."""
    try:
        layers = [int(part) for part in spec.split(",")]
    except ValueError:
        raise ValueError(f"--layers must be comma-separated integers, got {spec!r}") from None
    for layer in layers:
        if not -num_layers <= layer < num_layers:
            raise ValueError(f"--layers value {layer} is out of range for a model with {num_layers} layers")
    return layers


def make_feature_fn(model, layer_indexes: Sequence[int]):
    """A jitted ``(input_ids, input_mask) -> [len(layers), batch, seq, hidden]`` of the chosen layers."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model.eval()
    graphdef, state = nnx.split(model)

    @jax.jit
    def features(state, input_ids, input_mask):
        encoded_layers, _ = nnx.merge(graphdef, state)(input_ids, None, input_mask, output_all_encoded_layers=True)
        return jnp.stack([encoded_layers[index] for index in layer_indexes])

    return lambda input_ids, input_mask: features(state, input_ids, input_mask)


def feature_json(feature: InputFeatures, layer_indexes: Sequence[int], layer_values: np.ndarray) -> str:
    """One output line. ``layer_values``: ``[len(layers), seq, hidden]`` for this example."""
    tokens = []
    for position, token in enumerate(feature.tokens):
        layers = [
            # Python's round on the float64 value, as the reference does, so the text is identical.
            {"index": layer, "values": [round(value, 6) for value in layer_values[j, position].tolist()]}
            for j, layer in enumerate(layer_indexes)
        ]
        tokens.append({"token": token, "layers": layers})
    return json.dumps({"linex_index": feature.unique_id, "features": tokens})


def batches(features: Sequence[InputFeatures], batch_size: int) -> Iterator[tuple[list[InputFeatures], np.ndarray, np.ndarray]]:
    """Fixed-size batches (the last one padded with empty rows) so that one compiled program serves all."""
    for start in range(0, len(features), batch_size):
        chunk = list(features[start:start + batch_size])
        input_ids = np.zeros((batch_size, len(chunk[0].input_ids)), np.int32)
        input_mask = np.zeros_like(input_ids)
        for row, feature in enumerate(chunk):
            input_ids[row] = feature.input_ids
            input_mask[row] = feature.input_mask
        # Padding rows attend to their first position only, which keeps their softmax finite.
        input_mask[len(chunk):, 0] = 1
        yield chunk, input_ids, input_mask


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_file", type=str, required=True, help="one example per line; 'a ||| b' for pairs")
    parser.add_argument("--output_file", type=str, required=True, help="JSON lines output")
    parser.add_argument("--bert_model", type=str, required=True,
                        help="shortcut name (bert-base-uncased, ...) or a directory with config, weights and vocab.txt")
    parser.add_argument("--do_lower_case", action="store_true", help="lower-case the input (uncased models)")
    parser.add_argument("--layers", type=str, default="-1,-2,-3,-4", help="comma-separated encoder layer indexes")
    parser.add_argument("--max_seq_length", type=int, default=128,
                        help="sequence length after WordPiece tokenization; longer inputs are truncated, shorter padded")
    parser.add_argument("--batch_size", type=int, default=32, help="examples per forward pass")
    parser.add_argument("--model_parallel", type=int, default=1,
                        help="split the model over N devices (tensor parallelism: heads, MLP columns, vocabulary)")
    from jaxformers.training.bucketing import add_bucketing_arguments

    add_bucketing_arguments(parser, grouping=False)  # each batch padded to its length bucket, not max_seq_length
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # Before any model loads or any file is written: a typo must cost nothing and leave nothing behind.
    from jaxformers.arguments import check_paths

    check_paths(None, files=[("--input_file", args.input_file)], models=[("--bert_model", args.bert_model)])
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s -   %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO)
    if args.max_seq_length < 3:
        raise ValueError(f"--max_seq_length must be at least 3 ([CLS] x [SEP]), got {args.max_seq_length}")
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be positive, got {args.batch_size}")

    from jaxformers.models.bert import BertModel
    from jaxformers.tokenizers.bert import BertTokenizer
    from jaxformers.training import place_model

    tokenizer = BertTokenizer.from_pretrained(args.bert_model, do_lower_case=args.do_lower_case)
    model = place_model(BertModel.from_pretrained(args.bert_model), args)
    layer_indexes = parse_layers(args.layers, model.config.num_hidden_layers)
    max_positions = model.config.max_position_embeddings
    if args.max_seq_length > max_positions:
        raise ValueError(f"--max_seq_length {args.max_seq_length} exceeds the model's max_position_embeddings "
                         f"({max_positions})")

    examples = read_examples(args.input_file)
    if not examples:
        raise ValueError(f"no examples in {args.input_file!r}")
    features = convert_examples_to_features(examples, args.max_seq_length, tokenizer)
    compute = make_feature_fn(model, layer_indexes)
    from jaxformers.training.bucketing import Bucketer

    bucketer = Bucketer.from_args(args)

    with open(args.output_file, "w", encoding="utf-8") as writer:
        for chunk, input_ids, input_mask in batches(features, args.batch_size):
            trimmed = bucketer.trim({"input_ids": input_ids, "input_mask": input_mask})
            values = np.asarray(compute(trimmed["input_ids"], trimmed["input_mask"]))  # [layers, batch, bucket, hidden]
            for row, feature in enumerate(chunk):
                writer.write(feature_json(feature, layer_indexes, values[:, row]) + "\n")
    logger.info("wrote features of %d examples to %s", len(features), args.output_file)


if __name__ == "__main__":
    main()
