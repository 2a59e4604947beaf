"""examples/run_openai_gpt.py end to end on a tiny ROCStories CSV (real column layout) with a tiny OpenAI GPT and a
BPE vocabulary learned in the test: input layout, special tokens, training loss going down, eval_results.txt."""

from __future__ import annotations

import collections
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import run_openai_gpt  # noqa: E402

from jaxformers.models.openai_gpt import OpenAIGPTConfig, OpenAIGPTDoubleHeadsModel  # noqa: E402
from jaxformers.tokenizers.bert import BasicTokenizer  # noqa: E402
from jaxformers.tokenizers.openai_gpt import OpenAIGPTTokenizer  # noqa: E402

HEADER = ["InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
          "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding"]
STORIES = [
    ["Rick grew up in a troubled household.", "He never found good support in family, and turned to gangs.",
     "It wasn't long before Rick got shot in a robbery.", "The incident caused him to turn a new leaf.",
     "He is happy now.", "He joined a gang.", "1"],
    ["Laverne needs to prepare something for her friend's party.", "She decides to bake a batch of brownies.",
     "She chooses a recipe and follows it closely.", "Laverne tests one of the brownies to make sure it is delicious.",
     "The brownies are so delicious Laverne eats two of them.", "Laverne doesn't go to her friend's party.", "1"],
    ["Sarah had been dreaming of visiting Europe for years.", "She had finally saved enough for the trip.",
     "She landed in Spain and traveled east across the continent.", "She didn't like how different everything was.",
     "Sarah then decided to move to Europe.", "Sarah decided that she preferred her home over Europe.", "2"],
    ["Gina was worried the cookie dough in the tube would be gross.", "She was very happy to find she was wrong.",
     "The cookies from the tube were as good as from scratch.", "Gina intended to only eat 2 cookies and save the rest.",
     "Gina liked the cookies so much she ate them all in one sitting.", "Gina gave the cookies away at her church.", "1"],
    ["It was  my final performance in marching band.", "I was playing the snare drum in the band.",
     "We played Thriller and Radar Love.", "The performance was flawless.",
     "I was very proud of my performance.", "I was very ashamed of my performance.", "1"],
    ["Jim got his first credit card in college.", "He didn't have a job so he bought everything on his card.",
     "After he graduated he amounted a $10,000 debt.", "Jim realized that he was foolish to spend so much money.",
     "Jim decided to open another credit card.", "Jim bought a new car to celebrate.", "1"],
    ["Tom had a very short temper.", "One day a guest made him very angry.",
     "He punched a hole in the wall of his house.", "Tom's guest became afraid and left quickly.",
     "Tom sat on his couch filled with regret about his actions.", "Tom has dinner with his guest.", "1"],
    ["Ben was driving to work.", "Suddenly, a deer ran into the road.", "Ben swerved to avoid hitting the deer.",
     "His car went off the road and hit a tree.", "Ben took his car to the repair shop.",
     "Ben was happy his car had no damage.", "1"],
]


def learn_bpe(words, merges):
    vocab = collections.Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in words)
    learned = []
    for _ in range(merges):
        pairs = collections.Counter()
        for symbols, count in vocab.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        learned.append(best)
        fused = collections.Counter()
        for symbols, count in vocab.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            fused[tuple(out)] += count
        vocab = fused
    return learned


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rocstories")
    csv_path = root / "cloze_test_val.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        for index, story in enumerate(STORIES):
            writer.writerow([f"story-{index}"] + story)
    text = " ".join(" ".join(story[:6]) for story in STORIES)
    words = BasicTokenizer(do_lower_case=True).tokenize(text)
    merges = learn_bpe(words, 150)
    characters = sorted({c for w in words for c in w})
    tokens = ["<unk>"] + characters + [c + "</w>" for c in characters] + [a + b for a, b in merges]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    model_dir = root / "tiny_gpt"
    model_dir.mkdir()
    (model_dir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (model_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                          encoding="utf-8")
    config = OpenAIGPTConfig(len(vocab), n_positions=96, n_ctx=96, n_embd=32, n_layer=2, n_head=4)
    OpenAIGPTDoubleHeadsModel(config, seed=0).save_pretrained(model_dir)
    return root, csv_path, model_dir


def test_load_and_pre_process_rocstories(workdir):
    _, csv_path, model_dir = workdir
    stories = run_openai_gpt.load_rocstories_dataset(str(csv_path))
    assert len(stories) == len(STORIES)
    assert stories[0] == (" ".join(STORIES[0][:4]), STORIES[0][4], STORIES[0][5], 0)
    assert stories[2][3] == 1
    tokenizer = OpenAIGPTTokenizer.from_pretrained(str(model_dir), special_tokens=list(run_openai_gpt.SPECIAL_TOKENS))
    start, delimiter, classify = tokenizer.convert_tokens_to_ids(list(run_openai_gpt.SPECIAL_TOKENS))
    assert [start, delimiter, classify] == [len(tokenizer.encoder) + i for i in range(3)]
    encoded = run_openai_gpt.encode_stories(stories, tokenizer)
    cap, length = run_openai_gpt.input_length_for([encoded], n_positions=40)
    assert cap == 18 and length <= 40
    data = run_openai_gpt.pre_process_dataset(encoded, length, cap, start, delimiter, classify)
    story, first, second, label = encoded[0]
    row = data["input_ids"][0, 1]
    expected = [start, *story[:cap], delimiter, *second[:cap], classify]
    assert row[:len(expected)].tolist() == expected and not row[len(expected):].any()
    assert data["mc_token_ids"][0, 1] == len(expected) - 1
    assert data["lm_labels"][0, 1, :len(expected)].tolist() == expected
    assert (data["lm_labels"][0, 1, len(expected):] == -1).all()
    assert data["mc_labels"].tolist() == [s[3] for s in stories]


def test_bad_csv_is_reported(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(HEADER) + "\nid,a,b,c,d,e,f,3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv:2: AnswerRightEnding '3'"):
        run_openai_gpt.load_rocstories_dataset(str(path))


def test_train_and_eval_end_to_end(workdir, tmp_path, capsys):
    _, csv_path, model_dir = workdir
    out = tmp_path / "out"
    results = run_openai_gpt.main([
        "--model_name", str(model_dir), "--do_train", "--do_eval", "--train_dataset", str(csv_path),
        "--eval_dataset", str(csv_path), "--output_dir", str(out), "--train_batch_size", "4",
        "--eval_batch_size", "3", "--num_train_epochs", "12", "--learning_rate", "3e-3",
        "--warmup_proportion", "0.1", "--lm_coef", "0.9", "--seed", "1"])
    losses = [entry["loss"] for entry in results["train_history"]]
    assert len(losses) == 12 * 2
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.5

    # the fine-tuned model and tokenizer (with its special tokens) were saved and reload
    tokenizer = OpenAIGPTTokenizer.from_pretrained(str(out))
    assert list(tokenizer.special_tokens) == list(run_openai_gpt.SPECIAL_TOKENS)
    model = OpenAIGPTDoubleHeadsModel.from_pretrained(str(out))
    # The saved config.json counts the special rows in vocab_size, as transformers (which has no n_special)
    # and 0.6.2 both read it; the table keeps them.
    assert model.config.total_tokens_embeddings == len(tokenizer.encoder) + 3
    assert model.transformer.tokens_embed.weight.shape[0] == len(tokenizer.encoder) + 3

    # eval_results.txt holds what an independent pass over the eval set gives
    lines = (out / "eval_results.txt").read_text().splitlines()
    assert [line.split(" = ")[0] for line in lines] == ["eval_accuracy", "eval_loss", "train_loss"]
    written = {key: float(value) for key, value in (line.split(" = ") for line in lines)}
    encoded = run_openai_gpt.encode_stories(run_openai_gpt.load_rocstories_dataset(str(csv_path)), tokenizer)
    cap, length = run_openai_gpt.input_length_for([encoded], model.config.n_positions)
    data = run_openai_gpt.pre_process_dataset(encoded, length, cap, *tokenizer.convert_tokens_to_ids(
        list(run_openai_gpt.SPECIAL_TOKENS)))
    batch_losses, correct = [], 0
    for start in range(0, len(encoded), 3):
        rows = slice(start, start + 3)
        mc_loss = model(data["input_ids"][rows], data["mc_token_ids"][rows], mc_labels=data["mc_labels"][rows])[0]
        logits = np.asarray(model(data["input_ids"][rows], data["mc_token_ids"][rows])[1])
        batch_losses.append(float(mc_loss))
        correct += int((logits.argmax(1) == data["mc_labels"][rows]).sum())
    assert written["eval_accuracy"] == pytest.approx(correct / len(encoded))
    assert written["eval_loss"] == pytest.approx(np.mean(batch_losses), rel=1e-4)
    assert written["train_loss"] == pytest.approx(np.mean(losses[-2:]), rel=1e-6)
    assert written["eval_accuracy"] >= 0.75  # trained and evaluated on the same eight stories

    with pytest.raises(SystemExit):
        run_openai_gpt.main(["--help"])
    assert "--lm_coef" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--eval_dataset is required"):
        run_openai_gpt.main(["--model_name", str(model_dir), "--do_eval", "--output_dir", str(out)])
