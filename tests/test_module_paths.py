"""0.6.x module paths: every public name of each pytorch_pretrained_bert 0.6.2 module has a counterpart in the
jaxformers module of the same name, or is listed in that module's ABSENT with what replaces it."""

import importlib
import inspect

import pytest

MODULES = (
    "modeling", "modeling_gpt2", "modeling_openai", "modeling_transfo_xl", "tokenization", "tokenization_gpt2",
    "tokenization_openai", "tokenization_transfo_xl", "optimization_openai", "optimization",
)


def reference_public_names(module) -> set[str]:
    """Classes and functions the 0.6.2 module defines itself, and its upper-case constants."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if inspect.isclass(value) or inspect.isfunction(value):
            if value.__module__ == module.__name__:
                names.add(name)
        elif name.isupper():
            names.add(name)
    return names


@pytest.mark.parametrize("name", MODULES)
def test_every_06x_public_name_has_a_counterpart(name):
    reference = importlib.import_module(f"pytorch_pretrained_bert.{name}")
    ours = importlib.import_module(f"jaxformers.{name}")
    absent = getattr(ours, "ABSENT", {})
    expected = reference_public_names(reference)
    assert expected, name
    missing = sorted(n for n in expected if not hasattr(ours, n) and n not in absent)
    assert not missing, f"jaxformers.{name} lacks {missing}"
    # Documented absences are real absences with a reason, not stale entries.
    for key, reason in absent.items():
        assert key in expected and not hasattr(ours, key) and reason, key
    for exported in getattr(ours, "__all__", ()):
        assert hasattr(ours, exported), exported


def test_file_names_and_ported_imports_match():
    from pytorch_pretrained_bert import modeling as ppb_modeling
    from pytorch_pretrained_bert import tokenization_gpt2 as ppb_gpt2_tok
    from pytorch_pretrained_bert import tokenization_openai as ppb_openai_tok

    from jaxformers import modeling, tokenization_gpt2, tokenization_openai
    from jaxformers.modeling import BertForSequenceClassification, BertModel
    from jaxformers.modeling_gpt2 import GPT2LMHeadModel
    from jaxformers.optimization_openai import OpenAIAdam
    from jaxformers.tokenization import BertTokenizer

    assert BertModel.__name__ == "BertModel" and BertForSequenceClassification.config_class is modeling.BertConfig
    assert GPT2LMHeadModel.__module__ == "jaxformers.models.gpt2"
    assert callable(OpenAIAdam) and BertTokenizer.__module__ == "jaxformers.tokenizers.bert"
    for key in ("CONFIG_NAME", "WEIGHTS_NAME", "BERT_CONFIG_NAME", "TF_WEIGHTS_NAME"):
        assert getattr(modeling, key) == getattr(ppb_modeling, key), key
    for ours, reference in ((tokenization_gpt2, ppb_gpt2_tok), (tokenization_openai, ppb_openai_tok)):
        for key in ("VOCAB_NAME", "MERGES_NAME", "SPECIAL_TOKENS_NAME"):
            assert getattr(ours, key) == getattr(reference, key), key
    assert set(modeling.ACT2FN) >= set(ppb_modeling.ACT2FN)
