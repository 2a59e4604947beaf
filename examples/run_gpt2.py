#!/usr/bin/env python3
"""Sample text from GPT-2 with jaxformers: the pytorch-pretrained-bert 0.6.x ``examples/run_gpt2.py``, with the
decoding loop compiled by JAX (``jaxformers.generation``).

Conditional generation reads prompts from ``--prompt``, from ``--input_file`` (one prompt per non-empty line) or,
by default, interactively from stdin (end with Ctrl-D). ``--unconditional`` starts every sample from
``<|endoftext|>``. For each prompt, ``--nsamples`` continuations of ``--length`` tokens are drawn in batches of
``--batch_size``; ``--length -1`` means half the model's context. Sampling uses ``--temperature``, ``--top_k``
(0: off) and ``--top_p`` (1.0: off); ``--greedy`` takes the argmax instead.

Unlike the reference, unconditional mode draws ``--nsamples`` once and exits instead of looping forever, and a
prompt too long for the context window keeps only its last tokens.

    python examples/run_gpt2.py --model_name_or_path gpt2 --prompt "The meaning of life" --top_k 40 --length 40
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Iterator, Sequence

logger = logging.getLogger("run_gpt2")

END_OF_TEXT = "<|endoftext|>"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", type=str, default="gpt2",
                        help="shortcut name (gpt2, gpt2-medium) or a directory written by save_pretrained")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nsamples", type=int, default=1, help="samples per prompt")
    parser.add_argument("--batch_size", type=int, default=-1, help="samples generated together (-1: 1)")
    parser.add_argument("--length", type=int, default=-1, help="new tokens per sample (-1: half the context)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0, help="keep the k most likely tokens (0: all)")
    parser.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling mass (1.0: off)")
    parser.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    parser.add_argument("--unconditional", action="store_true", help="generate from <|endoftext|> alone")
    parser.add_argument("--prompt", type=str, default=None, help="one prompt (instead of reading stdin)")
    parser.add_argument("--input_file", type=str, default=None, help="a file of prompts, one per line")
    parser.add_argument("--pad_to_multiple_of", type=int, default=16,
                        help="round prompt lengths up so that nearby lengths reuse one compiled program")
    parser.add_argument("--model_parallel", type=int, default=1,
                        help="split the model over N devices (tensor parallelism: heads, MLP columns, vocabulary)")
    return parser.parse_args(argv)


def prompts_from(args: argparse.Namespace) -> Iterator[str]:
    if args.prompt is not None:
        yield args.prompt
        return
    if args.input_file is not None:
        with open(args.input_file, encoding="utf-8") as reader:
            for line in reader:
                text = line.rstrip("\n")
                if text.strip():
                    print(f"Model prompt >>> {text}")
                    yield text
        return
    while True:
        try:
            text = input("Model prompt >>> ")
        except EOFError:
            print()
            return
        if not sys.stdin.isatty():
            print(text)  # piped prompts: echo them where a terminal would have shown the typing
        if not text:
            print("Prompt should not be empty!")
            continue
        yield text


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s -   %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO)
    logger.info("arguments: %s", vars(args))
    if args.batch_size == -1:
        args.batch_size = 1
    if args.batch_size < 1 or args.nsamples < 1 or args.nsamples % args.batch_size:
        raise SystemExit(f"--nsamples ({args.nsamples}) must be a positive multiple of --batch_size "
                         f"({args.batch_size})")
    if args.unconditional and (args.prompt is not None or args.input_file is not None):
        raise SystemExit("--unconditional takes no --prompt or --input_file")

    # Imported here so that --help is instant.
    import jax

    from jaxformers.generation import Generator
    from jaxformers.models.gpt2 import GPT2LMHeadModel
    from jaxformers.tokenizers.gpt2 import GPT2Tokenizer
    from jaxformers.training import place_model

    logger.info("running on %s", jax.devices()[0])
    tokenizer = GPT2Tokenizer.from_pretrained(args.model_name_or_path)
    model = place_model(GPT2LMHeadModel.from_pretrained(args.model_name_or_path), args)
    window = model.config.n_ctx
    if args.length == -1:
        args.length = window // 2
    elif not 1 <= args.length <= window:
        raise SystemExit(f"--length must be in 1..{window}: can't get samples longer than the model's window "
                         f"({window} tokens)")
    end_of_text = tokenizer.encoder[END_OF_TEXT]
    generator = Generator(model)
    calls = 0  # each batch gets its own seed, so every sample of a run differs

    def sample(context: list[int]) -> None:
        nonlocal calls
        # The last fed token is at position len(context) + length - 2.
        room = model.config.n_positions - args.length + 1
        if len(context) > room:
            logger.warning("prompt of %d tokens is too long for %d new tokens: keeping its last %d tokens",
                           len(context), args.length, room)
            context = context[-room:]
        generated = 0
        for _ in range(args.nsamples // args.batch_size):
            out = generator(
                [context] * args.batch_size,
                max_new_tokens=args.length,
                do_sample=not args.greedy,
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                seed=args.seed + calls,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )
            calls += 1
            for row in out[:, len(context):]:
                generated += 1
                print("=" * 40 + " SAMPLE " + str(generated) + " " + "=" * 40)
                print(tokenizer.decode(row.tolist()))
        print("=" * 80)
        sys.stdout.flush()

    if args.unconditional:
        sample([end_of_text])
        return
    for text in prompts_from(args):
        context = tokenizer.encode(text)
        if not context:
            print("Prompt should not be empty!")
            continue
        sample(context)


if __name__ == "__main__":
    main()
