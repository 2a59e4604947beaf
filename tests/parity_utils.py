"""Helpers shared by parity tests: copying weights, comparing arrays and gradients with a torch reference."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from flax import nnx

from jaxformers.modeling_utils import param_specs


def torch_state_numpy(torch_module) -> dict[str, np.ndarray]:
    return {key: value.detach().cpu().numpy() for key, value in torch_module.state_dict().items()}


def max_abs_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape mismatch {a.shape} vs {b.shape}"
    return float(np.abs(a - b).max()) if a.size else 0.0


def assert_close(ours, reference, atol: float = 1e-5, what: str = "") -> None:
    diff = max_abs_diff(ours, reference)
    assert diff <= atol, f"{what}: max abs diff {diff:.3e} > {atol:.1e}"


def jax_grads_as_torch(model: nnx.Module, loss_fn: Callable[[nnx.Module], jax.Array]) -> dict[str, np.ndarray]:
    """Gradient of ``loss_fn(model)`` w.r.t. every parameter, keyed and laid out like the PyTorch state dict."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def pure_loss(params):
        return loss_fn(nnx.merge(graphdef, params, rest))

    grads = jax.grad(pure_loss)(params)
    specs = param_specs(model)
    out = {}
    for path, value in nnx.to_flat_state(grads):
        key = ".".join(str(p) for p in path)
        array = np.asarray(value[...] if hasattr(value, "get_value") or hasattr(value, "value") else value)
        out[key] = array.T if specs[key].torch_layout == "transpose" else array
    return out


def torch_grads(torch_module) -> dict[str, np.ndarray]:
    return {
        name: param.grad.detach().numpy()
        for name, param in torch_module.named_parameters()
        if param.grad is not None
    }
