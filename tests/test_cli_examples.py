"""Every example checks its data paths, output directory and model path before loading a model, and a failed
start on bad arguments leaves no file or directory behind (exit 2, one ``error:`` line naming the flag)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from script_loader import load_script

# (script, arguments with {missing} for a path that does not exist, the flag that must be named)
CASES = [
    ("examples/run_classifier.py", ["--task_name", "MRPC", "--do_train", "--data_dir", "{missing}",
                                    "--bert_model", "bert-base-uncased", "--output_dir", "out"], "--data_dir"),
    ("examples/run_classifier.py", ["--task_name", "MRPC", "--do_train", "--data_dir", ".",
                                    "--bert_model", "{missing}/model", "--output_dir", "out"], "--bert_model"),
    ("examples/run_squad.py", ["--bert_model", "bert-base-uncased", "--do_train", "--train_file", "{missing}.json",
                               "--output_dir", "out"], "--train_file"),
    ("examples/run_swag.py", ["--bert_model", "bert-base-uncased", "--do_train", "--data_dir", "{missing}",
                              "--output_dir", "out"], "--data_dir"),
    ("examples/extract_features.py", ["--input_file", "{missing}.txt", "--output_file", "out.jsonl",
                                      "--bert_model", "bert-base-uncased"], "--input_file"),
    ("examples/run_openai_gpt.py", ["--do_train", "--train_dataset", "{missing}.csv", "--output_dir", "out"],
     "--train_dataset"),
    ("examples/bertology.py", ["--data_dir", "{missing}", "--output_dir", "out"], "--data_dir"),
    ("examples/run_transfo_xl.py", ["--model_name", "{missing}/model"], "--model_name"),
    ("examples/lm_finetuning/finetune_on_pregenerated.py", ["--pregenerated_data", "{missing}", "--bert_model",
                                                            "bert-base-uncased", "--output_dir", "out"],
     "--pregenerated_data"),
    ("examples/lm_finetuning/pregenerate_training_data.py", ["--train_corpus", "{missing}.txt", "--bert_model",
                                                             "bert-base-uncased", "--output_dir", "out"],
     "--train_corpus"),
    ("examples/lm_finetuning/simple_lm_finetuning.py", ["--train_corpus", "{missing}.txt", "--bert_model",
                                                        "bert-base-uncased", "--output_dir", "out", "--do_train"],
     "--train_corpus"),
]


@pytest.mark.parametrize("script,argv,flag", CASES, ids=[f"{Path(c[0]).stem}-{c[2]}" for c in CASES])
def test_bad_paths_fail_before_loading_and_leave_nothing(tmp_path, monkeypatch, capsys, script, argv, flag):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    missing = str(tmp_path / "missing")
    module = load_script(script)
    with pytest.raises(SystemExit) as exit_:
        module.main([part.format(missing=missing) for part in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "error:" in err[-1] and flag in err[-1] and missing in err[-1], err
    assert os.listdir(workdir) == [], os.listdir(workdir)  # no output directory, no LM-TFM/, no log file
