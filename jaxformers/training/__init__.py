"""The fine-tuning engine: one jitted train step (mixed precision, gradient accumulation, data/FSDP sharding and
tensor parallelism over a ("data", "model") device mesh, multi-host), an eval step, checkpoints and the loop
helpers the example scripts share."""

from .checkpoint import (
    RunningTotals,
    claim_output_dir,
    latest_checkpoint,
    list_checkpoints,
    release_output_dir,
    restore_checkpoint,
    save_checkpoint,
)
from .loop import (
    RunSetup,
    add_model_parallel_argument,
    add_training_arguments,
    model_overrides,
    place_model,
    precision_from_args,
    setup_run,
    train_loop,
    write_eval_results,
)
from .precision import LossScaleState, Precision
from .sharding import host_share, initialize_distributed, make_mesh, pad_batch, partition_specs, shard_model
from .state import (
    TrainContext,
    TrainState,
    create_train_state,
    gather_to_host,
    make_eval_step,
    make_train_step,
    model_from_state,
)


def shard_batch(context: TrainContext, batch):
    """Place a dict of host arrays on the context's mesh, batch dimension split over the devices (on several
    hosts, each passes its own slice of the global batch)."""
    return context.shard_batch(batch)


__all__ = [
    "LossScaleState",
    "Precision",
    "RunSetup",
    "RunningTotals",
    "TrainContext",
    "TrainState",
    "add_model_parallel_argument",
    "add_training_arguments",
    "claim_output_dir",
    "create_train_state",
    "gather_to_host",
    "host_share",
    "initialize_distributed",
    "latest_checkpoint",
    "list_checkpoints",
    "make_eval_step",
    "make_mesh",
    "make_train_step",
    "model_from_state",
    "model_overrides",
    "pad_batch",
    "partition_specs",
    "place_model",
    "precision_from_args",
    "release_output_dir",
    "restore_checkpoint",
    "save_checkpoint",
    "setup_run",
    "shard_model",
    "shard_batch",
    "train_loop",
    "write_eval_results",
]
