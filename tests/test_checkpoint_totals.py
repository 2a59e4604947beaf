"""Running totals in train-state checkpoints: the mean training loss of a resumed run is the uninterrupted run's."""

from __future__ import annotations

import logging

import numpy as np
import optax
import pytest
from flax import nnx
from test_training_engine import TinyRegressor, regression_batch, regression_loss

from jaxformers.training import (
    RunningTotals,
    create_train_state,
    list_checkpoints,
    make_mesh,
    make_train_step,
    restore_checkpoint,
    save_checkpoint,
    train_loop,
)


@pytest.fixture(scope="module")
def setup():
    model = TinyRegressor(nnx.Rngs(0))
    tx = optax.adam(0.05)
    context, state = create_train_state(model, tx, mesh=make_mesh(1), seed=7)
    return context, state, make_train_step(context, regression_loss, tx, donate=False)


def batches(count: int):
    return (regression_batch(index) for index in range(count))


def test_totals_survive_a_resume_and_equal_an_uninterrupted_run(tmp_path, setup):
    context, initial, step = setup
    whole = RunningTotals()
    _, history = train_loop(step, initial, batches(7), num_steps=7, context=context, totals=whole)
    assert whole.steps == 7 and whole.mean("loss") == pytest.approx(np.mean([e["loss"] for e in history]))

    # Interrupted after step 4 (the batches run out), then resumed by a fresh run with fresh totals.
    first = RunningTotals()
    train_loop(step, initial, batches(4), num_steps=7, context=context, checkpoint_dir=tmp_path,
               checkpoint_every=2, totals=first)
    assert [number for number, _ in list_checkpoints(tmp_path)] == [2, 4]
    resumed = RunningTotals()
    _, history = train_loop(step, initial, batches(7), num_steps=7, context=context, checkpoint_dir=tmp_path,
                            checkpoint_every=2, totals=resumed)
    assert [entry["step"] for entry in history] == [5, 6, 7]
    assert resumed.steps == 7 and resumed.complete
    assert resumed.mean("loss") == pytest.approx(whole.mean("loss"), rel=1e-6)
    # Resuming at the very end (a kill after the last checkpoint) runs nothing and still knows the mean.
    at_end = RunningTotals()
    _, history = train_loop(step, initial, batches(7), num_steps=7, context=context, checkpoint_dir=tmp_path,
                            checkpoint_every=2, totals=at_end)
    assert history == [] and at_end.mean("loss") == pytest.approx(whole.mean("loss"), rel=1e-6)


def test_old_checkpoints_without_totals_and_leftover_temporaries(tmp_path, setup, caplog):
    _, state, _ = setup
    leftover = tmp_path / ".checkpoint_000000001.safetensors.0123abcd.tmp"  # a run killed while writing
    tmp_path.mkdir(exist_ok=True)
    leftover.write_bytes(b"half")
    save_checkpoint(tmp_path, state, 1)  # no totals: as checkpoints written before they existed
    assert not leftover.exists()
    totals = RunningTotals(steps=3, sums={"loss": 1.0})
    with caplog.at_level(logging.WARNING, logger="jaxformers"):
        assert restore_checkpoint(tmp_path, state, totals) is not None
    assert (totals.steps, totals.complete) == (0, False)
    assert "no running totals" in caplog.text
    with pytest.raises(ValueError, match=r"checkpoint 'x\.safetensors': unreadable running totals"):
        RunningTotals().load_json("{broken", "x.safetensors")
