"""jaxformers: JAX/Flax (nnx) reimplementation of pytorch-pretrained-bert 0.6.x."""

__version__ = "0.1.0"
