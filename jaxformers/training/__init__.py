"""The fine-tuning engine: one jitted train step (mixed precision, gradient accumulation, data/FSDP sharding
over a device mesh, multi-host), an eval step, checkpoints and the loop helpers the example scripts share."""

from .checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    restore_checkpoint,
    save_checkpoint,
)
from .loop import (
    RunSetup,
    add_training_arguments,
    model_overrides,
    precision_from_args,
    setup_run,
    train_loop,
    write_eval_results,
)
from .precision import LossScaleState, Precision
from .sharding import host_share, initialize_distributed, make_mesh, pad_batch
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
    "TrainContext",
    "TrainState",
    "add_training_arguments",
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
    "precision_from_args",
    "restore_checkpoint",
    "save_checkpoint",
    "setup_run",
    "shard_batch",
    "train_loop",
    "write_eval_results",
]
