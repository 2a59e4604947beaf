"""Logical axes on every parameter, the rules table, the ("data", "model") mesh and tensor parallelism.

The multi-device checks need 8 forced host devices, which must be configured before JAX starts, so they run in
a fresh subprocess (as in test_training_multidevice.py) that prints its measurements as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxformers.models.bert import BertConfig, BertForPreTraining, BertForQuestionAnswering
from jaxformers.models.gpt2 import GPT2Config, GPT2DoubleHeadsModel
from jaxformers.models.openai_gpt import OpenAIGPTConfig, OpenAIGPTDoubleHeadsModel
from jaxformers.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel
from jaxformers.sharding_rules import PARAM_RULES, param_rules, resolve_spec
from jaxformers.training import add_training_arguments, make_mesh, partition_specs, setup_run

REPO = Path(__file__).resolve().parents[1]


def bert(**overrides) -> BertForPreTraining:
    config = BertConfig(40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                        max_position_embeddings=16, **overrides)
    return BertForPreTraining(config, seed=1)


def logical_axes(model: nnx.Module) -> dict[str, tuple]:
    return {
        ".".join(map(str, path)): param.get_metadata("out_sharding", None)
        for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


def every_family() -> dict[str, nnx.Module]:
    """One model per family and head variant, built abstractly (shapes and metadata only: fast)."""
    xl = dict(d_model=16, d_embed=16, n_head=2, d_head=8, d_inner=24, n_layer=2, mem_len=4, tgt_len=4,
              cutoffs=[20, 40], tie_projs=[False, True, True])
    builders = {
        "bert": bert,
        "bert_qa": lambda: BertForQuestionAnswering(BertConfig(40, hidden_size=16, num_hidden_layers=1,
                                                               num_attention_heads=2, intermediate_size=24)),
        "gpt2": lambda: GPT2DoubleHeadsModel(GPT2Config(50, n_embd=16, n_layer=2, n_head=2, n_positions=16)),
        "openai_gpt": lambda: OpenAIGPTDoubleHeadsModel(OpenAIGPTConfig(50, n_embd=16, n_layer=2, n_head=2,
                                                                        n_positions=16)),
        "transfo_xl_div1": lambda: TransfoXLLMHeadModel(TransfoXLConfig(60, div_val=1, **xl)),
        "transfo_xl_div2": lambda: TransfoXLLMHeadModel(TransfoXLConfig(60, div_val=2, **xl)),
        "transfo_xl_sampled": lambda: TransfoXLLMHeadModel(TransfoXLConfig(60, div_val=2, sample_softmax=5,
                                                                           tie_weight=False, **xl)),
    }
    return {family: nnx.eval_shape(build) for family, build in builders.items()}


# ---------------------------------------------------------------------------------------- logical axis names


def test_every_parameter_of_every_family_has_known_logical_axes():
    known = dict(PARAM_RULES)
    for family, model in every_family().items():
        shapes = {".".join(map(str, path)): param.shape
                  for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param))}
        for key, axes in logical_axes(model).items():
            assert axes is not None, f"{family}: {key} has no logical axes"
            assert len(axes) == len(shapes[key]), f"{family}: {key} axes {axes} vs shape {shapes[key]}"
            assert all(name in known for name in axes), f"{family}: {key} has an unknown axis in {axes}"


def test_get_partition_spec_shows_the_megatron_layout():
    specs = nnx.get_partition_spec(nnx.state(nnx.eval_shape(bert), nnx.Param))
    layer = specs["bert"]["encoder"]["layer"][0]
    # nnx shows the logical names...
    assert layer["attention"]["self"]["query"]["weight"].get_value() == P("embed", "heads")
    assert layer["attention"]["output"]["dense"]["weight"].get_value() == P("heads", "embed")
    assert layer["output"]["dense"]["weight"].get_value() == P("mlp", "embed")
    assert specs["bert"]["embeddings"]["word_embeddings"]["weight"].get_value() == P("vocab", "embed")
    # ...and, under the rules table, the mesh axes (column-split Q, row-split outputs, vocab-split embedding).
    with nnx.logical_axis_rules(param_rules(fsdp=False)):
        mesh_specs = nnx.get_partition_spec(nnx.state(nnx.eval_shape(bert), nnx.Param))
    layer = mesh_specs["bert"]["encoder"]["layer"][0]
    assert layer["attention"]["self"]["query"]["weight"].get_value() == P((), ("model",))
    assert layer["output"]["dense"]["weight"].get_value() == P(("model",), ())
    assert mesh_specs["bert"]["embeddings"]["word_embeddings"]["weight"].get_value() == P(("model",), ())


def test_scanned_layers_get_the_layers_axis_first():
    scanned = logical_axes(nnx.eval_shape(lambda: bert(scan_layers=True)))
    assert scanned["bert.encoder.layer.attention.self.query.weight"] == ("layers", "embed", "heads")
    assert scanned["bert.encoder.layer.output.LayerNorm.weight"] == ("layers", "embed")
    gpt2 = logical_axes(nnx.eval_shape(lambda: GPT2DoubleHeadsModel(
        GPT2Config(50, n_embd=16, n_layer=3, n_head=2, n_positions=16, scan_layers=True))))
    assert gpt2["transformer.h.attn.c_attn.weight"] == ("layers", "embed", "qkv")
    assert gpt2["transformer.h.mlp.c_proj.weight"] == ("layers", "mlp", "embed")


def test_abstract_models_keep_the_axes():
    abstract = nnx.eval_shape(lambda: bert())
    assert logical_axes(abstract)["bert.encoder.layer.0.intermediate.dense.weight"] == ("embed", "mlp")


def test_loaded_models_keep_the_axes(tmp_path):
    """from_pretrained builds abstractly and fills in the file's arrays: the logical axes survive, scanned or not."""
    saved = bert()
    saved.save_pretrained(tmp_path)
    assert logical_axes(BertForPreTraining.from_pretrained(tmp_path)) == logical_axes(saved)
    scanned = BertForPreTraining.from_pretrained(tmp_path, scan_layers=True)
    assert logical_axes(scanned)["bert.encoder.layer.intermediate.dense.weight"] == ("layers", "embed", "mlp")


# ------------------------------------------------------------------------------------------------ rules table


def test_resolve_spec_skips_axes_that_do_not_divide_or_are_taken():
    mesh = {"data": 2, "model": 4}
    rules = param_rules(fsdp=True)
    assert resolve_spec(("vocab", "embed"), (40, 16), mesh, rules) == P(("model", "data"), None)
    # GPT-2's odd vocabulary stays whole; the width takes the FSDP axis instead.
    assert resolve_spec(("vocab", "embed"), (50257, 16), mesh, rules) == P(None, "data")
    assert resolve_spec(("embed", "heads"), (16, 12), mesh, rules) == P("data", "model")
    assert resolve_spec(("embed", "heads"), (16, 6), mesh, rules) == P("data", None)  # 6 heads-columns on 4
    assert resolve_spec(("embed", "embed"), (16, 16), mesh, rules) == P("data", None)  # one use per tensor
    assert resolve_spec(("layers", "mlp", "embed"), (3, 32, 16), mesh, param_rules()) == P(None, "model", None)
    # Size-1 mesh axes never appear: a 1-D data mesh gives the plain data-parallel / FSDP specs.
    assert resolve_spec(("vocab", "embed"), (40, 16), {"data": 8, "model": 1}, rules) == P("data", None)


def test_resolve_spec_errors_name_the_parameter():
    with pytest.raises(ValueError, match=r"bert\.x: logical axis 'hiden' has no sharding rule"):
        resolve_spec(("embed", "hiden"), (4, 4), {"data": 1}, PARAM_RULES, what="bert.x")
    with pytest.raises(ValueError, match=r"w: logical axes \('embed',\) do not match its shape \(4, 4\)"):
        resolve_spec(("embed",), (4, 4), {"data": 1}, PARAM_RULES, what="w")


def test_partition_specs_of_a_model_and_of_unnamed_parameters():
    mesh = make_mesh(1)
    specs = partition_specs(nnx.eval_shape(bert), mesh, fsdp=True)
    assert specs["bert"]["encoder"]["layer"][0]["attention"]["self"]["query"]["weight"].get_value() == P(None, None)

    class Plain(nnx.Module):  # nnx's own Linear records no logical names: replicated, or FSDP by shape
        def __init__(self):
            self.dense = nnx.Linear(4, 6, rngs=nnx.Rngs(0))

    assert partition_specs(Plain(), mesh, fsdp=False)["dense"]["kernel"].get_value() == P()


# ------------------------------------------------------------------------------------------------- the mesh


def test_make_mesh_axes_and_errors():
    mesh = make_mesh()
    assert mesh.axis_names == ("data", "model")
    assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
    assert dict(make_mesh(1).shape) == {"data": 1, "model": 1}
    with pytest.raises(ValueError, match="model=0"):
        make_mesh(model=0)
    with pytest.raises(ValueError, match=rf"data={jax.device_count() + 1} x model=1 needs"):
        make_mesh(jax.device_count() + 1)


def test_model_parallel_flag():
    parser = add_training_arguments(argparse.ArgumentParser())
    assert parser.parse_args([]).model_parallel == 1
    setup = setup_run(parser.parse_args(["--model_parallel", "1", "--num_devices", "1", "--train_batch_size", "2"]))
    assert dict(setup.mesh.shape) == {"data": 1, "model": 1} and setup.data_parallel == 1
    with pytest.raises(SystemExit, match=r"--model_parallel \(0\) must be >= 1"):
        setup_run(parser.parse_args(["--model_parallel", "0"]))
    with pytest.raises(SystemExit, match=r"--model_parallel \(3\) must be >= 1 and divide the 1 devices"):
        setup_run(parser.parse_args(["--model_parallel", "3", "--num_devices", "1"]))


# ------------------------------------------------------------------------------------- 8 devices, subprocess

SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    jax.config.update("jax_default_matmul_precision", "highest")
    from jaxformers.models.bert import BertConfig, BertForPreTraining
    from jaxformers.models.gpt2 import GPT2Config, GPT2LMHeadModel
    from jaxformers.optimization import BertAdam
    from jaxformers.training import create_train_state, gather_to_host, make_mesh, make_train_step

    VOCAB, SEQ, ROWS = 40, 8, 16

    def bert():
        config = BertConfig(VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                            max_position_embeddings=16, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
        return BertForPreTraining(config, seed=5)

    def gpt2():
        # Scanned layers: the stacked parameters carry the "layers" axis first.
        config = GPT2Config(VOCAB, n_embd=16, n_layer=2, n_head=4, n_positions=16, scan_layers=True)
        return GPT2LMHeadModel(config, seed=5)

    def bert_loss(model, batch, rng):
        return model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["mlm"],
                     batch["nsp"], dropout_rng=rng)

    def gpt2_loss(model, batch, rng):
        return model(batch["input_ids"], lm_labels=batch["input_ids"], dropout_rng=rng)

    def batch(seed):
        rs = np.random.RandomState(seed)
        mlm = rs.randint(0, VOCAB, (ROWS, SEQ))
        mlm[rs.rand(ROWS, SEQ) < 0.7] = -1
        mask = np.ones((ROWS, SEQ), np.int32)
        mask[::3, SEQ - 2:] = 0
        return {"input_ids": rs.randint(1, VOCAB, (ROWS, SEQ)).astype(np.int32),
                "token_type_ids": (np.arange(SEQ)[None] >= SEQ // 2).astype(np.int32).repeat(ROWS, 0),
                "attention_mask": mask, "mlm": mlm.astype(np.int32), "nsp": rs.randint(0, 2, ROWS).astype(np.int32)}

    def flat(tree):
        return {jax.tree_util.keystr(p): np.asarray(v, np.float64)
                for p, v in jax.tree_util.tree_leaves_with_path(gather_to_host(tree))}

    def train(new_model, loss_fn, mesh, fsdp):
        tx = BertAdam(1e-3, schedule=None)
        context, state = create_train_state(new_model(), tx, seed=3, mesh=mesh, fsdp=fsdp)
        step = make_train_step(context, loss_fn, tx)
        for index in range(3):
            state, metrics = step(state, batch(100 + index))
        return state

    def spec(state, *keys):
        node = state.params
        for key in keys:
            node = node[key]
        return [list(axis) if isinstance(axis, tuple) else axis for axis in node[...].sharding.spec]

    out = {"devices": jax.device_count()}
    layouts = {"data8": (8, 1, False), "data4_model2": (4, 2, False), "data2_model4_fsdp": (2, 4, True)}
    for name, new_model, loss_fn in (("bert", bert, bert_loss), ("gpt2", gpt2, gpt2_loss)):
        one = flat(train(new_model, loss_fn, make_mesh(1), False).params)
        for layout, (data, model, fsdp) in layouts.items():
            state = train(new_model, loss_fn, make_mesh(data, model), fsdp)
            got = flat(state.params)
            assert got.keys() == one.keys()
            out[f"{name}_{layout}"] = max(float(np.abs(got[k] - one[k]).max()) for k in one)
            if name == "bert":
                out[f"bert_{layout}_q"] = spec(state, "bert", "encoder", "layer", 0, "attention", "self", "query",
                                               "weight")
                out[f"bert_{layout}_out"] = spec(state, "bert", "encoder", "layer", 0, "output", "dense", "weight")
                out[f"bert_{layout}_word"] = spec(state, "bert", "embeddings", "word_embeddings", "weight")
            else:
                out[f"gpt2_{layout}_c_fc"] = spec(state, "transformer", "h", "mlp", "c_fc", "weight")

    # Inference with --model_parallel (place_model): the GPT-2 split over 4 devices gives the same logits and the
    # same greedy generation as the model on one device.
    from jaxformers.generation import Generator
    from jaxformers.training import shard_model
    plain, split = gpt2(), shard_model(gpt2(), make_mesh(1, 4))
    ids = np.arange(1, 9, dtype=np.int32)[None].repeat(2, 0)
    out["tp_logits"] = float(np.abs(np.asarray(plain(ids)[0]) - np.asarray(split(ids)[0])).max())
    prompts = [[1, 2, 3], [4, 5, 6]]
    generated = [np.asarray(Generator(model)(prompts, max_new_tokens=4)).tolist() for model in (plain, split)]
    out["tp_generate_equal"] = generated[0] == generated[1]
    out["tp_c_fc"] = [axis for axis in split.transformer.h.mlp.c_fc.weight[...].sharding.spec]

    # The examples' flags: --model_parallel 2 on 8 devices is a 4 x 2 mesh; the batch only splits 4 ways.
    import argparse
    from jaxformers.training import add_training_arguments, setup_run
    args = add_training_arguments(argparse.ArgumentParser()).parse_args(
        ["--do_train", "--model_parallel", "2", "--train_batch_size", "4"])
    out["setup_mesh"] = dict(setup_run(args).mesh.shape)
    print("RESULT", json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    script = tmp_path_factory.mktemp("sharding") / "tensor_parallel.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("layout", ["data8", "data4_model2", "data2_model4_fsdp"])
def test_data_tensor_and_fsdp_parallel_steps_match_one_device(eight_devices, family, layout):
    assert eight_devices["devices"] == 8
    # Same global batch and dropout masks; only the order of the cross-device sums differs.
    assert eight_devices[f"{family}_{layout}"] <= 1e-6


@pytest.mark.slow
def test_parameters_are_laid_out_by_the_rules_table(eight_devices):
    # Data parallelism alone replicates; tensor parallelism column-splits Q, row-splits the output dense and
    # vocab-splits the embedding; FSDP adds "data" (on the vocabulary after "model": 40 rows over 4 x 2).
    assert eight_devices["bert_data8_q"] == [None, None]
    assert eight_devices["bert_data4_model2_q"] == [None, "model"]
    assert eight_devices["bert_data4_model2_out"] == ["model", None]
    assert eight_devices["bert_data4_model2_word"] == ["model", None]
    assert eight_devices["bert_data2_model4_fsdp_q"] == ["data", "model"]
    assert eight_devices["bert_data2_model4_fsdp_out"] == ["model", "data"]
    assert eight_devices["bert_data2_model4_fsdp_word"] == [["model", "data"], None]
    # Scanned GPT-2: the stacked layer axis stays whole.
    assert eight_devices["gpt2_data4_model2_c_fc"] == [None, None, "model"]
    assert eight_devices["gpt2_data2_model4_fsdp_c_fc"] == [None, "data", "model"]


@pytest.mark.slow
def test_inference_split_over_the_model_axis_matches_one_device(eight_devices):
    assert eight_devices["tp_c_fc"] == [None, None, "model"]
    assert eight_devices["tp_logits"] <= 1e-5
    assert eight_devices["tp_generate_equal"]


@pytest.mark.slow
def test_model_parallel_flag_builds_the_two_axis_mesh(eight_devices):
    assert eight_devices["setup_mesh"] == {"data": 4, "model": 2}
