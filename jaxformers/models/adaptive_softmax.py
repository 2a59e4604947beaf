"""Transformer-XL's adaptive input embedding and projected adaptive softmax (Grave et al., 2017; Baevski and
Auli, 2019), with the sampled softmax of its training code: the vocabulary is split into frequency clusters at
``cutoffs``, and each cluster's width shrinks by ``div_val``.

Attribute names follow the PyTorch state dict of pytorch-pretrained-bert 0.6.x (``word_emb.emb_layers.0.weight``,
``crit.out_projs.1``...). The modules read these config fields: ``n_token``, ``cutoffs``, ``d_model``, ``d_embed``,
``div_val``, ``tie_weight``, ``tie_projs``, ``proj_init_std``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..layers import Array, ModuleFactory, check_ids_in_range, take_rows


def cluster_bounds(config: Any) -> list[tuple[int, int]]:
    """``[(start, stop)]`` token-id range of every adaptive cluster (the head shortlist first)."""
    ends = [0] + list(config.cutoffs) + [config.n_token]
    return list(zip(ends[:-1], ends[1:]))


def cluster_width(config: Any, index: int) -> int:
    return config.d_embed // (config.div_val ** index)


# --------------------------------------------------------------------------------------------------- embedding


class _Table(nnx.Module):
    """An embedding table ``weight: [rows, features]`` (nn.Embedding's key); lookups are done by the caller."""

    def __init__(self, weight: nnx.Param):
        self.weight = weight


class AdaptiveEmbedding(nnx.Module):
    """Token embeddings whose width shrinks by ``div_val`` per frequency cluster, each projected to ``d_model``
    (``emb_projs[i]: [d_model, d_embed_i]``) and scaled by ``sqrt(d_model)``."""

    def __init__(self, options: ModuleFactory):
        config = options.config
        self.d_proj = config.d_model
        self.d_embed = config.d_embed
        self.div_val = config.div_val
        self.n_token = config.n_token
        self.bounds = tuple(cluster_bounds(config))
        self.scale = config.d_model ** 0.5
        # Cluster tables are [rows, d_embed_i]: vocab-split rows like any embedding.
        table_axes, proj_init = ("vocab", "proj"), ("normal", config.proj_init_std)
        if config.div_val == 1:
            self.emb_layers = nnx.List([_Table(options.param((config.n_token, config.d_embed), axes=table_axes))])
            projs = []
            if config.d_model != config.d_embed:
                projs.append(options.param((config.d_model, config.d_embed), axes=("embed", "proj"), init=proj_init))
            self.emb_projs = nnx.List(projs)
        else:
            widths = [cluster_width(config, i) for i in range(len(self.bounds))]
            self.emb_layers = nnx.List([
                _Table(options.param((stop - start, width), axes=table_axes))
                for (start, stop), width in zip(self.bounds, widths)
            ])
            self.emb_projs = nnx.List([
                options.param((config.d_model, width), axes=("embed", "proj"), init=proj_init) for width in widths
            ])
        self.dtype = options.dtype

    def projection(self, index: int) -> Array | None:
        """``[d_model, d_embed_i]`` projection of cluster ``index`` (None: identity)."""
        if self.div_val == 1:
            return self.emb_projs[0][...] if len(self.emb_projs) else None
        return self.emb_projs[index][...]

    def __call__(self, ids: Array) -> Array:
        check_ids_in_range(ids, self.n_token, "token id")
        dtype = self.dtype or jnp.float32
        if self.div_val == 1:
            table = self.emb_layers[0].weight[...].astype(dtype)
            embedded = take_rows(table, ids)
            projection = self.projection(0)
            if projection is not None:
                embedded = jnp.dot(embedded, projection.astype(dtype).T)
        else:
            # Each cluster embeds every position (clipped ids) and keeps the rows it owns: no gathers of
            # data-dependent size, so it runs under jit. Out-of-range ids (unchecked under jit) give NaN.
            embedded = jnp.full((*ids.shape, self.d_proj), jnp.nan, dtype)
            for index, (start, stop) in enumerate(self.bounds):
                table = self.emb_layers[index].weight[...].astype(dtype)
                local = jnp.clip(ids - start, 0, stop - start - 1)
                rows = jnp.dot(jnp.take(table, local, axis=0), self.projection(index).astype(dtype).T)
                owned = (ids >= start) & (ids < stop)
                embedded = jnp.where(owned[..., None], rows, embedded)
        return embedded * jnp.asarray(self.scale, dtype)  # [..., d_model]


# ------------------------------------------------------------------------------------------------ output layers


class OutputLayer(nnx.Module):
    """One ``crit.out_layers[i]`` (nn.Linear ``[out, in]`` layout); ``weight`` is absent when tied to the
    embedding table of the same cluster."""

    def __init__(self, options: ModuleFactory, rows: int, width: int, tied: bool, width_axis: str = "proj"):
        self.weight = None if tied else options.param((rows, width), axes=("vocab", width_axis))
        self.bias = options.param((rows,), axes=("vocab",), init=("constant", 0.0))


class Cluster(NamedTuple):
    """One adaptive-softmax cluster's output layer (the head's rows include one per tail cluster)."""

    weight: Array  # [rows, d_i]
    bias: Array  # [rows]
    projection: Array | None  # [d_model, d_i], or None (identity)


class ProjectedAdaptiveLogSoftmax(nnx.Module):
    """Adaptive softmax with per-cluster projections (``crit`` of the reference).

    The head scores the shortlist ``[0, cutoffs[0])`` plus one logit per tail cluster; a tail token's
    log-probability is its cluster's head log-probability plus its log-softmax inside the cluster.
    ``out_projs[i]: [d_model, d_embed_i]`` maps hidden states to cluster ``i``'s width.
    """

    def __init__(self, options: ModuleFactory):
        config = options.config
        self.bounds = tuple(cluster_bounds(config))
        self.n_clusters = len(self.bounds) - 1
        self.div_val = config.div_val
        self.d_model, self.d_embed = config.d_model, config.d_embed
        self.shortlist = self.bounds[0][1]
        self.tie_weight = bool(config.tie_weight)
        tie_projs = list(config.tie_projs) + [False] * (len(self.bounds) - len(config.tie_projs))
        if self.n_clusters > 0:
            self.cluster_weight = options.param((self.n_clusters, config.d_embed), axes=("clusters", "proj"))
            self.cluster_bias = options.param((self.n_clusters,), axes=("clusters",), init=("constant", 0.0))
        else:
            self.cluster_weight = self.cluster_bias = None

        # Where each cluster's projection comes from: ("own", None), ("embedding", index) or ("none", None).
        sources: list[tuple[str, int | None]] = []
        projs = []
        for index in range(len(self.bounds)):
            width = config.d_embed if config.div_val == 1 else cluster_width(config, index)
            if config.div_val == 1 and config.d_model == config.d_embed:
                source = ("none", None)
            elif tie_projs[index]:
                source = ("embedding", 0 if config.div_val == 1 else index)
            else:
                source = ("own", None)
            sources.append(source)
            projs.append(
                options.param((config.d_model, width), axes=("embed", "proj"), init=("normal", config.proj_init_std))
                if source[0] == "own" else None
            )
        self.proj_sources = tuple(sources)
        self.out_projs = nnx.List(projs)

        def out_layer(rows: int, width: int) -> OutputLayer:
            return OutputLayer(options, rows, width, self.tie_weight)

        if config.div_val == 1:
            self.out_layers = nnx.List([out_layer(config.n_token, config.d_embed)])
        else:
            self.out_layers = nnx.List([
                out_layer(stop - start, cluster_width(config, index))
                for index, (start, stop) in enumerate(self.bounds)
            ])

    def tied_torch_keys(self, prefix: str, embedding_prefix: str) -> dict[str, str]:
        tied = {}
        if self.tie_weight:
            for index in range(len(self.out_layers)):
                tied[f"{prefix}out_layers.{index}.weight"] = f"{embedding_prefix}emb_layers.{index}.weight"
        for index, (kind, source) in enumerate(self.proj_sources):
            if kind == "embedding":
                tied[f"{prefix}out_projs.{index}"] = f"{embedding_prefix}emb_projs.{source}"
        return tied

    def _clusters(self, embedding: AdaptiveEmbedding) -> list[Cluster]:
        """Every cluster's output layer, the head first."""
        clusters = []
        for index, (start, stop) in enumerate(self.bounds):
            if self.div_val == 1:
                layer = self.out_layers[0]
                table = embedding.emb_layers[0] if self.tie_weight else layer
                weight, bias = table.weight[...][start:stop], layer.bias[...][start:stop]
            else:
                layer = self.out_layers[index]
                table = embedding.emb_layers[index] if self.tie_weight else layer
                weight, bias = table.weight[...], layer.bias[...]
            if index == 0 and self.n_clusters > 0:
                weight = jnp.concatenate([weight, self.cluster_weight[...]], axis=0)
                bias = jnp.concatenate([bias, self.cluster_bias[...]], axis=0)
            kind, source = self.proj_sources[index]
            if kind == "own":
                projection = self.out_projs[index][...]
            elif kind == "embedding":
                projection = embedding.emb_projs[source][...]
            else:
                projection = None
            clusters.append(Cluster(weight, bias, projection))
        return clusters

    @staticmethod
    def _logits(hidden: Array, weight: Array, bias: Array, projection: Array | None) -> Array:
        if projection is not None:
            hidden = jnp.dot(hidden, projection.astype(hidden.dtype))
        return jnp.dot(hidden, weight.astype(hidden.dtype).T) + bias.astype(hidden.dtype)

    def log_probs(self, hidden: Array, embedding: AdaptiveEmbedding) -> Array:
        """``[..., d_model]`` -> ``[..., n_token]`` log-probabilities (float32)."""
        hidden = hidden.astype(jnp.float32)
        clusters = self._clusters(embedding)
        head = jax.nn.log_softmax(self._logits(hidden, *clusters[0]), axis=-1)
        if self.n_clusters == 0:
            return head
        pieces = [head[..., : self.shortlist]]
        for index in range(1, len(clusters)):
            tail = jax.nn.log_softmax(self._logits(hidden, *clusters[index]), axis=-1)
            pieces.append(head[..., self.shortlist + index - 1, None] + tail)
        return jnp.concatenate(pieces, axis=-1)

    def nll(self, hidden: Array, target: Array, embedding: AdaptiveEmbedding) -> Array:
        """Negative log-likelihood of ``target [...]`` given ``hidden [..., d_model]``, in token order (float32).

        Every tail cluster is scored for every position (static shapes, so it jits) but only its normaliser
        and the target's logit are kept: no ``[..., n_token]`` array is materialised."""
        hidden = hidden.astype(jnp.float32)
        clusters = self._clusters(embedding)

        def target_log_prob(logits: Array, local_target: Array) -> Array:
            picked = jnp.take_along_axis(logits, local_target[..., None], axis=-1)[..., 0]
            return picked - jax.nn.logsumexp(logits, axis=-1)

        head_logits = self._logits(hidden, *clusters[0])
        start, stop = self.bounds[0]
        log_prob = target_log_prob(head_logits, jnp.clip(target, 0, stop - 1))
        if self.n_clusters:
            head_log_norm = jax.nn.logsumexp(head_logits, axis=-1)
            for index in range(1, len(clusters)):
                start, stop = self.bounds[index]
                in_cluster = (target >= start) & (target < stop)
                cluster_log_prob = head_logits[..., self.shortlist + index - 1] - head_log_norm
                tail = target_log_prob(self._logits(hidden, *clusters[index]),
                                       jnp.clip(target - start, 0, stop - start - 1))
                log_prob = jnp.where(in_cluster, cluster_log_prob + tail, log_prob)
        return -log_prob


# ---------------------------------------------------------------------------------------------- sampled softmax


class LogUniformSampler:
    """Negative sampler of the sampled softmax: ``P(id) = log((id + 2) / (id + 1)) / log(range_max + 1)``
    (Zipfian, for vocabularies sorted by frequency). ``log_q[id]`` corrects the sampled logits; it is meant to
    be the log of the probability that ``id`` is among ``2 n`` draws, ``log(1 - (1 - P)^(2n))``, but the
    reference computes ``log(1 - (1 + P)^(-2n))`` (a sign slip): we follow the reference."""

    def __init__(self, range_max: int, n_sample: int):
        self.range_max, self.n_sample = range_max, n_sample
        log_indices = np.log(np.arange(1.0, range_max + 2.0, dtype=np.float32))
        self.dist = ((log_indices[1:] - log_indices[:-1]) / log_indices[-1]).astype(np.float32)  # [range_max]
        tries = 2 * n_sample
        self.log_q = np.log(-np.expm1(-tries * np.log1p(self.dist.astype(np.float64)))).astype(np.float32)

    @property
    def n_tries(self) -> int:
        return 2 * self.n_sample

    def sample(self, rng: Array) -> Array:
        """``[2 * n_sample]`` ids drawn with replacement. Duplicates are kept (fixed shape under jit) and
        neutralised in :func:`sample_logits`, which gives the reference's ``unique()`` result."""
        return jax.random.categorical(rng, jnp.log(jnp.asarray(self.dist)), shape=(self.n_tries,))


def sample_logits(embed: Callable[[Array], Array], bias: Array, log_q: Array, target: Array, hidden: Array,
                  negatives: Array) -> Array:
    """Logits of the sampled softmax: ``[batch, seq, 1 + n_negatives]``, the true class first.

    embed: ids -> ``[..., d_model]`` output embeddings; bias: ``[n_token]``; log_q: ``[n_token]`` (see
    LogUniformSampler); target ``[batch, seq]``; hidden ``[batch, seq, d_model]``; negatives ``[n]``.
    Negatives equal to the target, and repeats of an earlier negative, get -1e30 (no probability mass).
    """
    negatives = jnp.asarray(negatives)
    log_q = jnp.asarray(log_q)
    true_logits = (jnp.sum(embed(target) * hidden, axis=-1) + bias[target] - log_q[target])  # [batch, seq]
    negative_logits = (jnp.einsum("bsd,nd->bsn", hidden, embed(negatives)) + bias[negatives]
                       - log_q[negatives])  # [batch, seq, n]
    count = negatives.shape[0]
    repeated = jnp.any((negatives[:, None] == negatives[None, :]) & np.tri(count, k=-1, dtype=bool), axis=1)
    hit = (target[..., None] == negatives) | repeated
    negative_logits = jnp.where(hit, -1e30, negative_logits)
    return jnp.concatenate([true_logits[..., None], negative_logits], axis=-1)


__all__ = (
    "AdaptiveEmbedding",
    "Cluster",
    "LogUniformSampler",
    "OutputLayer",
    "ProjectedAdaptiveLogSoftmax",
    "cluster_bounds",
    "cluster_width",
    "sample_logits",
)
