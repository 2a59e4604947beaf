"""Greedy decoding speed: one compiled loop (jaxformers.generation) vs a Python loop of jitted decode steps vs the
0.6.2 PyTorch reference loop (past=). Random GPT-2 weights, fp32."""
import argparse, time
import jax, jax.numpy as jnp, numpy as np, torch
torch.set_num_threads(2)
from flax import nnx
from jaxformers.generation import Generator
from jaxformers.models.gpt2 import GPT2Config, GPT2LMHeadModel

parser = argparse.ArgumentParser()
parser.add_argument("--n_embd", type=int, default=768); parser.add_argument("--n_layer", type=int, default=12)
parser.add_argument("--n_head", type=int, default=12); parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--prompt", type=int, default=16); parser.add_argument("--new", type=int, default=64)
parser.add_argument("--no_torch", action="store_true"); parser.add_argument("--repeats", type=int, default=3)
args = parser.parse_args()
sizes = dict(n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head)
model = GPT2LMHeadModel(GPT2Config(50257, **sizes))
prompts = np.random.default_rng(0).integers(0, 50257, (args.batch, args.prompt))

def timed(fn, repeats=3):
    fn(); best = 1e9
    for _ in range(repeats):
        start = time.perf_counter(); fn(); best = min(best, time.perf_counter() - start)
    return best

generator = Generator(model)
loop = timed(lambda: generator(prompts, max_new_tokens=args.new), args.repeats)

graphdef, state = nnx.split(model)
@jax.jit
def step(state, ids, cache, mask, positions):
    logits, cache = nnx.merge(graphdef, state).decode_step(ids, cache, attention_mask=mask, position_ids=positions)
    return jnp.argmax(logits[:, -1], -1), cache
def python_loop():
    slots = args.prompt + args.new - 1
    mask = jnp.ones((args.batch, slots), jnp.int32)
    cache = model.init_cache(args.batch, slots)
    token, cache = step(state, jnp.asarray(prompts), cache, mask, jnp.broadcast_to(jnp.arange(args.prompt), prompts.shape))
    out = [token]
    for i in range(args.new - 1):
        token, cache = step(state, token[:, None], cache, mask, jnp.full((args.batch, 1), args.prompt + i))
        out.append(token)
    return np.asarray(jnp.stack(out, 1))
python = timed(python_loop, args.repeats)

from pytorch_pretrained_bert import GPT2Config as TC, GPT2LMHeadModel as TM
reference = None if args.no_torch else TM(TC(50257, **sizes)).eval()
def torch_loop():
    with torch.no_grad():
        previous, past = torch.from_numpy(prompts), None
        for _ in range(args.new):
            logits, past = reference(previous, past=past)
            previous = logits[:, -1].argmax(-1, keepdim=True)
torch_time = float("nan") if args.no_torch else timed(torch_loop, repeats=1)
tokens = args.batch * args.new
print(f"{jax.devices()[0].platform} gpt2 {sizes} batch={args.batch} prompt={args.prompt} new={args.new}")
for name, seconds in (("compiled loop", loop), ("python loop of jitted steps", python), ("torch 0.6.2 (past=)", torch_time)):
    print(f"  {name:30s} {seconds * 1000:8.1f} ms  {tokens / seconds:8.1f} tokens/s")
