"""Pick JAX's CPU platform on machines with no accelerator, so that JAX never probes for a TPU there.

With its platform list unset, JAX tries every backend it knows, TPU first. On a CPU-only machine that costs a
logged "Unable to initialize backend 'tpu'" and, when libtpu is installed (``jaxformers[tpu-plan]``), a page of
libtpu start-up errors on stderr. We set the platform to CPU only when nothing else could be wanted: the user
has not set ``JAX_PLATFORMS`` (or ``JAX_FORCE_TPU_INIT``), the machine has no TPU chip, and no accelerator plugin
(CUDA, ROCm, ...) is installed. TPU topologies stay reachable without a TPU:
``jax.experimental.topologies.get_topology_desc(platform="tpu", ...)`` loads libtpu by itself.
"""

from __future__ import annotations

import glob
import os

# PCI vendor id of Google's TPU chips, as /sys reports it (jax's own hardware check uses the same id).
_GOOGLE_PCI_VENDOR = "0x1ae0"


def _has_tpu_chip() -> bool:
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path, encoding="ascii") as stream:
                if stream.read().strip() == _GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return False


def _accelerator_plugin_installed() -> bool:
    """A PJRT plugin (jax-cuda12-plugin, ROCm, ...) as JAX discovers them: env var, entry point or namespace."""
    import pkgutil
    from importlib import metadata, util

    if os.environ.get("PJRT_NAMES_AND_LIBRARY_PATHS"):
        return True
    if any(True for _ in metadata.entry_points(group="jax_plugins")):
        return True
    try:
        spec = util.find_spec("jax_plugins")
    except (ImportError, ValueError):
        return False
    locations = spec.submodule_search_locations if spec is not None else None
    return bool(locations) and any(True for _ in pkgutil.iter_modules(locations))


def default_jax_to_cpu_without_accelerator() -> bool:
    """Set ``jax_platforms='cpu'`` when no accelerator can be in use (see the module docstring); True if set."""
    if "JAX_PLATFORMS" in os.environ or "JAX_FORCE_TPU_INIT" in os.environ:
        return False
    if _has_tpu_chip() or _accelerator_plugin_installed():
        return False
    import jax

    if jax.config.jax_platforms:  # set in code before jaxformers was imported
        return False
    # A config update, not an environment variable: it does not leak into the user's subprocesses.
    jax.config.update("jax_platforms", "cpu")
    return True
