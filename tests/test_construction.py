"""One construction path: ``Model(config, *, rngs)`` (with ``seed=`` and the 0.6.x positional forms kept), abstract
building by ``nnx.eval_shape`` over that same constructor, and no construction-time state left on the model."""

import jax
import numpy as np
import pytest
from flax import nnx

import jaxformers.layers as layers
from jaxformers.layers import build_abstract
from jaxformers.models.bert import BertConfig, BertForPreTraining, BertForSequenceClassification, BertModel
from jaxformers.models.gpt2 import GPT2Config, GPT2DoubleHeadsModel, GPT2LMHeadModel, GPT2Model
from jaxformers.models.openai_gpt import OpenAIGPTConfig, OpenAIGPTDoubleHeadsModel
from jaxformers.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel

XL = dict(d_model=16, d_embed=16, n_head=2, d_head=8, d_inner=24, n_layer=2, mem_len=4, tgt_len=4,
          cutoffs=[20, 40], tie_projs=[False, True, True])

# family -> (model class, config, positional constructor arguments after the config)
FAMILIES = {
    "bert_classifier": (BertForSequenceClassification,
                        BertConfig(40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=24), (3,)),
    "bert_pretraining": (BertForPreTraining,
                         BertConfig(40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=24, scan_layers=True), ()),
    "gpt2": (GPT2DoubleHeadsModel, GPT2Config(50, n_embd=16, n_layer=2, n_head=2, n_positions=16), ()),
    "openai_gpt": (OpenAIGPTDoubleHeadsModel, OpenAIGPTConfig(50, n_embd=16, n_layer=2, n_head=2, n_positions=16),
                   ()),
    "transfo_xl": (TransfoXLLMHeadModel, TransfoXLConfig(60, div_val=2, **XL), ()),
}


def _flat_params(model: nnx.Module) -> dict[str, object]:
    return {".".join(map(str, path)): param.get_value()
            for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_rngs_and_seed_build_the_same_model(family):
    cls, config, args = FAMILIES[family]
    by_rngs = _flat_params(cls(config, *args, rngs=nnx.Rngs(3)))
    by_seed = _flat_params(cls(config, *args, seed=3))
    assert by_rngs.keys() == by_seed.keys() and len(by_rngs) > 5
    for key in by_rngs:
        np.testing.assert_array_equal(np.asarray(by_rngs[key]), np.asarray(by_seed[key]), err_msg=key)
    # a different seed really draws different weights (the comparison above is not vacuous)
    other = _flat_params(cls(config, *args, seed=4))
    assert any(not np.array_equal(np.asarray(other[key]), np.asarray(by_seed[key])) for key in by_seed)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_no_construction_state_stays_on_the_model(family):
    """The parameter factory (and its RNG streams) lives only in the constructors' local variables."""
    cls, config, args = FAMILIES[family]
    model = cls(config, *args, seed=0)
    assert not jax.tree.leaves(nnx.state(model, nnx.RngState))
    for path, node in nnx.iter_graph(model):
        assert not isinstance(node, (layers.ModuleFactory, nnx.Rngs)), path


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_abstract_model_is_the_concrete_one_as_shapes(family):
    cls, config, args = FAMILIES[family]
    concrete = _flat_params(cls(config, *args, rngs=nnx.Rngs(0)))
    abstract = _flat_params(build_abstract(lambda: cls(config, *args, rngs=nnx.Rngs(0))))
    assert abstract.keys() == concrete.keys()
    for key, value in abstract.items():
        assert isinstance(value, jax.ShapeDtypeStruct), key
        assert (value.shape, value.dtype) == (concrete[key].shape, concrete[key].dtype), key


@pytest.fixture
def parameter_log(monkeypatch):
    """Every parameter layers.new_param makes, as (shape, traced?): traced means built under nnx.eval_shape."""
    log: list[tuple[tuple[int, ...], bool]] = []
    original = layers.new_param

    def logged(*args, **kwargs):
        param = original(*args, **kwargs)
        log.append((tuple(param.shape), isinstance(param.get_value(), jax.core.Tracer)))
        return param

    monkeypatch.setattr(layers, "new_param", logged)
    return log


def test_from_pretrained_builds_no_concrete_parameter(tmp_path, parameter_log):
    cls, config, args = FAMILIES["bert_classifier"]
    saved = cls(config, *args, seed=1)
    saved.save_pretrained(tmp_path)
    parameter_log.clear()
    loaded = cls.from_pretrained(tmp_path, num_labels=3)
    assert parameter_log, "from_pretrained made no parameter through layers.new_param"
    assert all(traced for _, traced in parameter_log), [shape for shape, traced in parameter_log if not traced]
    ours, theirs = _flat_params(loaded), _flat_params(saved)
    for key in theirs:
        np.testing.assert_array_equal(np.asarray(ours[key]), np.asarray(theirs[key]), err_msg=key)


def test_from_pretrained_draws_missing_parameters_from_their_initializers(tmp_path, parameter_log):
    """A head the checkpoint lacks is filled from the initializer recorded on the parameter: no concrete rebuild."""
    config = FAMILIES["bert_classifier"][1]
    BertModel(config, seed=1).save_pretrained(tmp_path)
    parameter_log.clear()
    model = BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert all(traced for _, traced in parameter_log)
    weight, bias = np.asarray(model.classifier.weight[...]), np.asarray(model.classifier.bias[...])
    assert weight.shape == (16, 3) and np.all(np.isfinite(weight)) and np.any(weight != 0)
    assert np.abs(weight).max() < 6 * config.initializer_range  # N(0, initializer_range)
    np.testing.assert_array_equal(bias, np.zeros(3, np.float32))


def test_lm_head_from_a_base_model_checkpoint(tmp_path):
    """GPT-2's head is tied to the token table, so a base-model save loads into it completely."""
    config = FAMILIES["gpt2"][1]
    base = GPT2Model(config, seed=2)
    base.save_pretrained(tmp_path)
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(np.asarray(model.transformer.wte.weight[...]), np.asarray(base.wte.weight[...]))


def test_parameter_keys_are_those_rngs_params_would_draw():
    # layers.next_params_key replaces rngs.params() for speed under nnx.eval_shape; the weights a seed gives
    # must not change, so the keys and the stream's count must be exactly the ones rngs.params() gives.
    ours, flax_stream = nnx.Rngs(11), nnx.Rngs(11)
    for _ in range(4):
        assert np.array_equal(jax.random.key_data(layers.next_params_key(ours)),
                              jax.random.key_data(flax_stream.params()))
    assert int(ours.params.count[...]) == int(flax_stream.params.count[...]) == 4
