"""Test-wide settings: exact fp32 matmuls (parity), a private cache, no network."""

import os

import jax
import pytest

# GPU/TPU default to reduced-precision fp32 matmuls; parity needs full precision on every backend.
jax.config.update("jax_default_matmul_precision", "highest")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

try:  # Property tests must not depend on machine load: no per-example deadline, no "too slow" health check.
    from hypothesis import HealthCheck, settings

    settings.register_profile("jaxformers", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("jaxformers")
except ImportError:  # hypothesis is a test extra; the tests that use it import it themselves
    pass


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets an empty cache directory and cannot reach the public hub."""
    monkeypatch.setenv("JAXFORMERS_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("PYTORCH_PRETRAINED_BERT_CACHE", raising=False)
    monkeypatch.setenv("JAXFORMERS_ENDPOINT", "http://127.0.0.1:9")  # discard port: fails fast, never internet
