"""The checkpoint-I/O functions (jaxformers.checkpoint_io / checkpoint_files) behind PreTrainedModel's methods.

The methods are one-line delegations, so these check that the function API does what the 0.6.x methods do
(same files, same arrays, same strictness and messages), that modeling_utils and saving still hand out the very
same objects under their old names, and that the checkpoint modules are not imported by the modules below them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import jaxformers
from jaxformers import checkpoint_files, checkpoint_io, modeling_utils, saving
from jaxformers.file_utils import HubOptions

BERT = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=16)
GPT2 = dict(n_positions=16, n_ctx=16, n_embd=16, n_layer=2, n_head=2)
PACKAGE = Path(jaxformers.__file__).parent


def _bert(seed: int = 0, **config) -> jaxformers.BertForMaskedLM:
    return jaxformers.BertForMaskedLM(jaxformers.BertConfig(40, **{**BERT, **config}), seed=seed)


def _same_params(left, right, skip_unused: bool = False) -> None:
    ours, theirs = checkpoint_io.per_layer_params(left), checkpoint_io.per_layer_params(right)
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        if skip_unused and checkpoint_io.is_unused(left, key):
            continue
        np.testing.assert_array_equal(np.asarray(ours[key]), np.asarray(theirs[key]), err_msg=key)


def test_modeling_utils_and_saving_reexport_the_same_objects():
    for name in ("read_torch_bin", "read_safetensors", "read_msgpack", "read_weights", "read_sharded",
                 "flatten_tree", "unflatten_keys", "describe_layout", "extract_model_archive",
                 "jaxformers_msgpack_tree", "hf_flax_to_torch", "WEIGHT_NAMES_IN_ORDER", "CONFIG_NAME",
                 "CONFIG_NAMES", "TORCH_WEIGHTS_NAME", "MSGPACK_MARKER_KEY", "ARCHIVE_MAX_MEMBERS"):
        assert getattr(modeling_utils, name) is getattr(checkpoint_files, name), name
    for name in ("LoadReport", "ParamSpec", "param_specs", "per_layer_params", "assign_per_layer_params",
                 "WEIGHT_DTYPES"):
        assert getattr(modeling_utils, name) is getattr(checkpoint_io, name), name
    for name in ("CONFIG_NAME", "FLAX_WEIGHTS_NAME", "SAFETENSORS_NAME", "SAFETENSORS_INDEX_NAME"):
        assert getattr(saving, name) is getattr(checkpoint_files, name), name
    # The 0.6.x module paths take their file names from the same place.
    from jaxformers import modeling

    assert modeling.WEIGHTS_NAME is checkpoint_files.TORCH_WEIGHTS_NAME


def _module_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (``if TYPE_CHECKING:`` blocks and function bodies excluded)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_module_below_the_model_base_class_imports_it():
    """layers and configuration stay free of checkpoint code; the checkpoint modules import modeling_utils only
    for type checking (else importing one of them first would be a circular import)."""
    for name in ("layers", "configuration", "checkpoint_files", "checkpoint_io", "saving"):
        imports = _module_level_imports(PACKAGE / f"{name}.py")
        assert ".modeling_utils" not in imports, name
    for name in ("layers", "configuration"):
        assert not {".checkpoint_io", ".checkpoint_files"} & _module_level_imports(PACKAGE / f"{name}.py"), name


def test_function_round_trip_equals_the_method_api(tmp_path):
    model = _bert(seed=3)
    checkpoint_io.save_pretrained(model, tmp_path / "functions", pytorch=True, safetensors=True)
    model.save_pretrained(tmp_path / "methods", pytorch=True, safetensors=True)
    functions, methods = tmp_path / "functions", tmp_path / "methods"
    assert (functions / "config.json").read_text() == (methods / "config.json").read_text()
    for name in ("model.safetensors", "pytorch_model.bin", "flax_model.msgpack"):
        (by_function, layout), (by_method, _) = (checkpoint_files.read_weights(functions / name),
                                                 checkpoint_files.read_weights(methods / name))
        assert layout == ("ours" if name == "flax_model.msgpack" else "torch")
        assert sorted(by_function) == sorted(by_method), name
        for key in by_function:
            np.testing.assert_array_equal(by_function[key], by_method[key], err_msg=f"{name}: {key}")

    loaded, info = checkpoint_io.load_pretrained(jaxformers.BertForMaskedLM, tmp_path / "functions",
                                                 output_loading_info=True, strict=True)
    assert type(loaded) is jaxformers.BertForMaskedLM
    assert info == {"missing_keys": [], "unexpected_keys": [], "skipped_keys": []}
    # model.safetensors is read first, and (as transformers' file) leaves out the pooler BertForMaskedLM never uses.
    _same_params(loaded, model, skip_unused=True)
    assert any(checkpoint_io.is_unused(model, key) for key in checkpoint_io.param_specs(model))
    _same_params(jaxformers.BertForMaskedLM.from_pretrained(tmp_path / "methods", strict=True), loaded)


def test_torch_state_dict_function_is_the_method_without_buffers():
    bert = _bert()
    by_function, by_method = checkpoint_io.torch_state_dict(bert), bert.torch_state_dict()
    assert sorted(by_function) == sorted(by_method)
    for key in by_method:
        np.testing.assert_array_equal(by_function[key], by_method[key], err_msg=key)
    # A transposed layout really is transposed on the way out ([out, in] for nn.Linear).
    query = checkpoint_io.per_layer_params(bert)["bert.encoder.layer.0.attention.self.query.weight"]
    np.testing.assert_array_equal(by_function["bert.encoder.layer.0.attention.self.query.weight"],
                                  np.asarray(query).T)

    gpt2 = jaxformers.GPT2LMHeadModel(jaxformers.GPT2Config(50, **GPT2))
    params, full = checkpoint_io.torch_state_dict(gpt2), gpt2.torch_state_dict()
    # GPT-2's class adds its causal-mask buffers, which PyTorch keeps in its state dict; nothing else differs.
    assert sorted(set(full) - set(params)) == [f"transformer.h.{index}.attn.bias" for index in range(2)]
    assert all(checkpoint_io.is_buffer(gpt2, key) for key in set(full) - set(params))


def test_load_state_dict_function_names_missing_unexpected_and_misshapen_keys():
    source = _bert(seed=1)
    arrays = checkpoint_io.torch_state_dict(source)
    target = _bert(seed=2)
    report = checkpoint_io.load_state_dict(target, arrays, strict=True, source="the dict")
    assert report.missing_keys == report.unexpected_keys == []
    assert report.skipped_keys == ["cls.predictions.decoder.weight"]  # the tied copy of the word embeddings
    _same_params(target, source)

    key = "bert.encoder.layer.1.output.dense.weight"
    without = {name: value for name, value in arrays.items() if name != key}
    with pytest.raises(ValueError, match=rf"strict load of the dict into BertForMaskedLM failed: missing keys "
                                         rf"\['{key}'\], unexpected keys \['extra.weight'\]"):
        checkpoint_io.load_state_dict(_bert(), {**without, "extra.weight": np.zeros(3, np.float32)}, strict=True,
                                      source="the dict")
    report = checkpoint_io.load_state_dict(_bert(), {**without, "extra.weight": np.zeros(3, np.float32)})
    assert (report.missing_keys, report.unexpected_keys) == ([key], ["extra.weight"])

    # Shapes are reported in the file's (PyTorch) layout: the dense weight is [out 16, in 24].
    wrong = {**arrays, key: np.zeros((24, 17), np.float32)}
    with pytest.raises(ValueError, match=rf"{key}: expected shape \(16, 24\), found \(24, 17\)"):
        checkpoint_io.load_state_dict(_bert(), wrong, source="the dict")


def test_refuse_foreign_layout_names_what_the_file_seems_to_hold():
    gpt2 = checkpoint_io.torch_state_dict(jaxformers.GPT2Model(jaxformers.GPT2Config(50, **GPT2)))
    with pytest.raises(ValueError, match=r"'x.bin' matches only 0 of the \d+ weights of BertForMaskedLM: it seems "
                                         r"to hold GPT-2 PyTorch names"):
        checkpoint_io.refuse_foreign_layout(_bert(), gpt2, "x.bin")
    checkpoint_io.refuse_foreign_layout(_bert(), checkpoint_io.torch_state_dict(_bert()), "ours.bin")  # no error


def test_resolved_checkpoint_names_the_directory_and_the_known_shortcuts(tmp_path):
    hub = HubOptions()
    missing = tmp_path / "missing"  # an absolute path: never taken for a hub repository id
    with pytest.raises(FileNotFoundError, match=r"missing' is neither a directory.*known shortcut names: gpt2, "
                                                r"gpt2-medium"):
        with checkpoint_files.resolved_checkpoint(jaxformers.GPT2Model, missing, hub, False, False):
            pass
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=rf"no weights in '{tmp_path}': expected one of model.safetensors"):
        with checkpoint_files.resolved_checkpoint(jaxformers.GPT2Model, tmp_path, hub, False, False):
            pass
    with checkpoint_files.resolved_checkpoint(jaxformers.GPT2Model, tmp_path, hub, False, True) as found:
        assert found == (tmp_path, None)  # a given state_dict needs only the config


def test_repeated_from_pretrained_builds_independent_models(tmp_path):
    """The second load of one architecture copies the cached abstract graph: same values as a first build, and
    nothing shared, so writing into one model leaves the other (and later loads) as they were."""
    _bert(seed=3).save_pretrained(tmp_path)
    checkpoint_io._ABSTRACT_MODELS.clear()
    first = jaxformers.BertForMaskedLM.from_pretrained(tmp_path)
    assert len(checkpoint_io._ABSTRACT_MODELS) == 1
    second = jaxformers.BertForMaskedLM.from_pretrained(tmp_path)
    assert len(checkpoint_io._ABSTRACT_MODELS) == 1  # a cache hit, not a second entry
    _same_params(first, second)
    weight = second.bert.embeddings.word_embeddings.weight
    assert weight is not first.bert.embeddings.word_embeddings.weight
    weight.set_value(weight.get_value() + 1.0)
    third = jaxformers.BertForMaskedLM.from_pretrained(tmp_path)
    _same_params(first, third)
    assert not np.allclose(np.asarray(second.bert.embeddings.word_embeddings.weight.get_value()),
                           np.asarray(first.bert.embeddings.word_embeddings.weight.get_value()))


def test_abstract_model_cache_keys_on_config_and_arguments(tmp_path):
    _bert().save_pretrained(tmp_path)
    checkpoint_io._ABSTRACT_MODELS.clear()
    unrolled = jaxformers.BertForMaskedLM.from_pretrained(tmp_path)
    scanned = jaxformers.BertForMaskedLM.from_pretrained(tmp_path, scan_layers=True)
    assert len(checkpoint_io._ABSTRACT_MODELS) == 2
    assert scanned.config.scan_layers and not unrolled.config.scan_layers
    assert "bert.encoder.layer" in scanned.stacked_layers()
    _same_params(unrolled, scanned)
    # An argument that is not a plain value is never part of a cache key: the build is not cached.
    key = checkpoint_io._abstract_cache_key(jaxformers.BertModel, unrolled.config, (), {"rngs": object()})
    assert key is None
    for size in range(checkpoint_io.ABSTRACT_CACHE_SIZE + 3):
        jaxformers.BertForMaskedLM.from_pretrained(tmp_path, config_overrides={"layer_norm_eps": 1e-6 + size})
    assert len(checkpoint_io._ABSTRACT_MODELS) == checkpoint_io.ABSTRACT_CACHE_SIZE


def test_seeds_share_one_abstract_build_and_still_draw_the_missing_weights(tmp_path):
    jaxformers.BertModel(jaxformers.BertConfig(40, **BERT)).save_pretrained(tmp_path)
    checkpoint_io._ABSTRACT_MODELS.clear()
    loaded = [jaxformers.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3, seed=seed)
              for seed in (0, 1, 0)]
    assert len(checkpoint_io._ABSTRACT_MODELS) == 1
    weights = [np.asarray(model.classifier.weight.get_value()) for model in loaded]  # absent from the file
    assert not np.allclose(weights[0], weights[1])
    np.testing.assert_array_equal(weights[0], weights[2])
    np.testing.assert_array_equal(np.asarray(loaded[0].bert.pooler.dense.weight.get_value()),
                                  np.asarray(loaded[1].bert.pooler.dense.weight.get_value()))


def test_from_pretrained_takes_the_constructor_keywords_of_the_parameter_factory(tmp_path):
    """seed, rngs, dtype and param_dtype go to the constructors' parameter factory (as at c44832d); the refactor
    had from_pretrained refuse them as unknown keywords."""
    from flax import nnx

    jaxformers.BertModel(jaxformers.BertConfig(40, **BERT)).save_pretrained(tmp_path)
    low = jaxformers.BertModel.from_pretrained(tmp_path, param_dtype=np.dtype("float16"))
    assert low.embeddings.word_embeddings.weight.get_value().dtype == np.float16
    assert jaxformers.BertModel.from_pretrained(tmp_path, dtype=np.dtype("float16")) is not None
    missing = [np.asarray(jaxformers.BertForSequenceClassification.from_pretrained(
        tmp_path, num_labels=2, rngs=nnx.Rngs(seed)).classifier.weight.get_value()) for seed in (3, 3, 4)]
    np.testing.assert_array_equal(missing[0], missing[1])
    assert not np.allclose(missing[0], missing[2])
    with pytest.raises(ValueError, match="unknown keyword argument 'options'"):
        jaxformers.BertModel.from_pretrained(tmp_path, options=None)
