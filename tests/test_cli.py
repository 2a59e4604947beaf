"""The ``jaxformers`` command line: help for every command and option, one-line errors with exit 2 (usage) or 1
(failure), inputs checked before any model loads, shared converter flags, and ``parity`` on every family."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxformers import cli, parity
from jaxformers.conversion import FORMATS

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` -> (exit status, stdout, stderr); ``--help`` exits through SystemExit like the real tool."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, expected_code: int, *fragments: str) -> None:
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxformers: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def all_parsers(parser: argparse.ArgumentParser, prefix: str = "jaxformers"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_parsers(sub, f"{prefix} {name}")


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if ``parity`` gets as far as loading a model."""
    def refuse(plan):
        raise AssertionError(f"a model was loaded for {plan}")
    monkeypatch.setattr(parity, "load_ours", refuse)


# --------------------------------------------------------------------------------------------------- help


cli.build_parser()  # fills the registry: every registered command (plan too) is held to the same standard


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in cli.COMMANDS),
                                  *(["convert", name, "--help"] for name in FORMATS)])
def test_every_help_exits_0_and_reads_as_plain_text(capsys, argv):
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert out.startswith("usage: jaxformers " + " ".join(argv[:-1]).strip()), out[:200]
    assert "``" not in out and ":class:" not in out


def test_every_option_of_every_command_has_help():
    for prog, parser in all_parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), prog
                continue
            assert action.help and action.help != argparse.SUPPRESS, (prog, action.option_strings or action.dest)


def test_top_level_help_lists_the_commands(capsys):
    _, out, _ = run_cli(capsys, "--help")
    assert "parity" in out and "convert" in out and "--debug" in out
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("jaxformers ")


def test_convert_help_lists_each_format_with_its_summary(capsys):
    code, out, _ = run_cli(capsys, "convert", "--help")
    assert code == 0
    for name in FORMATS:
        assert name in out
    assert "Google's BERT TensorFlow checkpoint" in out and "params_shapes.json" in out


def test_parity_help_names_the_classes_and_references(capsys):
    _, out, _ = run_cli(capsys, "parity", "--help")
    for name in ("BertForQuestionAnswering", "GPT2LMHeadModel", "OpenAIGPTModel", "TransfoXLLMHeadModel",
                 "pytorch-pretrained-bert", "transformers", "--num-labels", "--max-length"):
        assert name in out, name


# ----------------------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("model_class", ["BertForFoo", "BertConfig"])
def test_unknown_model_class_is_one_line_listing_the_choices(capsys, no_model_loads, model_class):
    code, _, err = run_cli(capsys, "parity", "--model-class", model_class)
    assert_one_line_error(code, err, 2, model_class, "BertModel", "GPT2LMHeadModel")


def test_missing_checkpoint_is_named(capsys, no_model_loads, tmp_path):
    missing = str(tmp_path / "nonexistent")
    code, _, err = run_cli(capsys, "parity", missing)
    assert_one_line_error(code, err, 2, missing)


def test_missing_text_file_is_refused_before_loading(capsys, no_model_loads, tmp_path):
    code, _, err = run_cli(capsys, "parity", "--text-file", str(tmp_path / "missing.txt"))
    assert_one_line_error(code, err, 2, "missing.txt")


def test_empty_text_file_and_bad_numbers_are_refused(capsys, no_model_loads, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    code, _, err = run_cli(capsys, "parity", "--text-file", str(empty))
    assert_one_line_error(code, err, 2, "empty.txt", "no text")
    code, _, err = run_cli(capsys, "parity", "--max-length", "1")
    assert_one_line_error(code, err, 2, "--max-length")
    code, _, err = run_cli(capsys, "parity", "--num-labels", "abc")
    assert_one_line_error(code, err, 2, "--num-labels", "abc")


def write_config(directory: Path, **config) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


TXL_CONFIG = dict(n_token=99, cutoffs=[20, 50], d_model=16, d_embed=16, n_head=2, d_head=8, d_inner=32, div_val=2,
                  n_layer=2, tgt_len=8, mem_len=8, clamp_len=20)


def test_transformers_reference_refuses_transformer_xl(capsys, no_model_loads, tmp_path):
    directory = write_config(tmp_path / "txl", **TXL_CONFIG)
    code, _, err = run_cli(capsys, "parity", str(directory), "--reference", "transformers")
    assert_one_line_error(code, err, 2, "Transformer-XL", "--reference pytorch-pretrained-bert")


def test_class_of_another_family_is_refused(capsys, no_model_loads, tmp_path):
    directory = write_config(tmp_path / "gpt2", vocab_size=99, n_embd=16, n_layer=2, n_head=2)
    code, _, err = run_cli(capsys, "parity", str(directory), "--model-class", "BertModel")
    assert_one_line_error(code, err, 2, "BertModel", "gpt2", "GPT2LMHeadModel")


def test_family_and_class_come_from_the_config():
    assert parity.family_of(TXL_CONFIG, "x") == "transfo-xl"
    assert parity.family_of({"model_type": "openai-gpt"}, "x") == "openai-gpt"
    assert parity.family_of({"n_embd": 8, "n_layer": 2}, "x") == "gpt2"
    assert parity.family_of({"hidden_size": 8}, "x") == "bert"
    assert parity.family_of({}, "openai-community/gpt2") == "gpt2"
    assert parity.class_from_config({"architectures": ["GPT2LMHeadModel"]}, "gpt2") == "GPT2LMHeadModel"
    assert parity.class_from_config({"architectures": ["Unknown"]}, "bert") == "BertModel"


def test_a_failure_is_one_line_with_exit_1_and_debug_shows_the_traceback(capsys, tmp_path):
    # A BERT config without any weights file: a missing input, exit 2, naming the directory.
    directory = write_config(tmp_path / "noweights", vocab_size=99, hidden_size=16, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=32)
    code, _, err = run_cli(capsys, "parity", str(directory))
    assert_one_line_error(code, err, 2, str(directory))
    # A weights file that is not one: loading fails, exit 1, one line naming the file.
    (directory / "model.safetensors").write_bytes(b"\x00not safetensors\n" * 4)
    code, _, err = run_cli(capsys, "parity", str(directory))
    assert_one_line_error(code, err, 1)
    with pytest.raises(Exception):
        cli.main(["parity", str(directory), "--debug"])


def test_convert_without_format_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, "convert")
    assert_one_line_error(code, err, 2, "FORMAT", "jaxformers convert --help")


@pytest.mark.parametrize("argv", [
    ["bert-tf", "--tf_checkpoint_path", "{missing}/bert_model.ckpt", "--config", "{config}"],
    ["bert-tf", "--tf_checkpoint_path", "{missing}/bert_model.ckpt", "--config", "{missing}/bert_config.json"],
    ["gpt2-tf", "--gpt2_checkpoint_path", "{missing}/model.ckpt"],
    ["openai", "--openai_checkpoint_folder_path", "{missing}"],
    ["transfo-xl", "--tf_checkpoint_path", "{missing}/model.ckpt"],
    ["transfo-xl", "--transfo_xl_dataset_file", "{missing}/cache.pkl"],
])
def test_converters_check_inputs_and_create_nothing(capsys, tmp_path, argv):
    config = write_config(tmp_path / "cfg", vocab_size=99) / "config.json"
    out = tmp_path / "out"
    argv = [part.format(missing=tmp_path / "missing", config=config) for part in argv]
    code, _, err = run_cli(capsys, "convert", *argv, "--output_dir", str(out))
    assert_one_line_error(code, err, 2, str(tmp_path / "missing"))
    assert not out.exists()


def test_converter_refuses_an_output_path_that_is_a_file(capsys, tmp_path):
    checkpoint = tmp_path / "model"
    checkpoint.mkdir()
    (checkpoint / "params_shapes.json").write_text("[]")
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    code, _, err = run_cli(capsys, "convert", "openai", "--openai_checkpoint_folder_path", str(checkpoint),
                           "--output_dir", str(target))
    assert_one_line_error(code, err, 2, "file.txt")
    assert target.read_text() == "keep me"


# ------------------------------------------------------------------------------------ shared converter flags


SHARED = {"bert-tf": "--tf_checkpoint_path", "gpt2-tf": "--gpt2_checkpoint_path",
          "openai": "--openai_checkpoint_folder_path", "transfo-xl": "--tf_checkpoint_path"}
OLD_CONFIG_NAME = {"bert-tf": "--bert_config_file", "gpt2-tf": "--gpt2_config_file",
                   "openai": "--openai_config_file", "transfo-xl": "--transfo_xl_config_file"}


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_converter_takes_the_shared_flags_and_the_0_6_names(name):
    parser = cli.build_parser()
    new = parser.parse_args(["convert", name, SHARED[name], "ckpt", "--output_dir", "out", "--config", "c.json",
                             "--pytorch", "--safetensors"])
    assert (new.output_dir, new.config, new.pytorch, new.safetensors) == ("out", "c.json", True, True)
    old = parser.parse_args(["convert", name, SHARED[name], "ckpt", "--pytorch_dump_folder_path", "out",
                             OLD_CONFIG_NAME[name], "c.json"])
    # The 0.6.x converters always wrote pytorch_model.bin into --pytorch_dump_folder_path.
    assert (old.output_dir, old.config, old.pytorch, old.safetensors) == ("out", "c.json", True, False)


def test_converter_scripts_answer_like_the_tool():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = str(REPO / "conversion" / "convert_gpt2_checkpoint.py")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, env=env, timeout=600)
    assert shown.returncode == 0 and "--output_dir" in shown.stdout and "--safetensors" in shown.stdout
    failed = subprocess.run([sys.executable, script, "--gpt2_checkpoint_path", "/nonexistent/model.ckpt",
                             "--output_dir", "/nonexistent/out"], capture_output=True, text=True, env=env, timeout=600)
    assert failed.returncode == 2 and failed.stderr.strip().count("\n") == 0, failed.stderr
    assert "error:" in failed.stderr and "/nonexistent/model.ckpt" in failed.stderr


# --------------------------------------------------------------------------------------- the registry


def test_a_registered_command_appears_and_runs(capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", {})
    cli._register_builtin_commands()
    cli.register_command("hello", "say hello", lambda p: p.add_argument("--name", default="x", help="who"),
                         lambda args: print(f"hello {args.name}") or 0)
    code, out, _ = run_cli(capsys, "hello", "--name", "jax")
    assert code == 0 and out == "hello jax\n"
    _, out, _ = run_cli(capsys, "--help")
    assert "say hello" in out
