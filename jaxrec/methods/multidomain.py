"""Multi-domain user networks: ``shared_bottom``, ``mmoe``, ``ple``, ``star``, ``conet``, ``cross_stitch`` over
shared user embeddings.

Every recipe trains one model on the training interactions of **both** domains at once
(:func:`~jaxrec.methods.joint.train_joint`) and returns scorers for both. A cold-start user of the target has
source history only; what reaches their target vector is what the recipe shares:

* ``shared_bottom`` — Shared-Bottom (Caruana, 1997; the multi-task baseline of Ma et al., KDD 2018): one bottom
  network shared by the domains, then an output tower per domain. Shares: the user embedding and the bottom.
* ``mmoe`` — MMoE (Ma et al., KDD 2018): experts shared by the domains, a softmax gate and an output tower per
  domain, over the shared user embedding. Shares: the user embedding and the experts; the gates decide per
  domain how much of each expert to use.
* ``ple`` — PLE (Tang et al., RecSys 2020): per-domain experts plus shared experts in progressive extraction
  layers (CGC for one layer). Shares: the user embedding and the shared experts; the domain experts keep what
  does not transfer apart.
* ``star`` — STAR (Sheng et al., CIKM 2021): one network whose layer weights are the element-wise product of
  shared and per-domain weights (biases summed). Shares: the user embedding and the shared weights.
* ``conet`` — CoNet (Hu et al., CIKM 2018): one user tower per domain with cross connections (a transfer
  matrix per hidden layer shared by both directions) between them, both over the shared user embedding.
  Shares: the user embedding and the transfer matrices.
* ``cross_stitch`` — cross-stitch networks (Misra et al., CVPR 2016): one user tower per domain, both over the
  shared user embedding, whose hidden layers are mixed after every layer by a learned 2 × 2 matrix. Shares: the
  user embedding and the stitch weights.

A user's vector in domain ``k`` is ``e_u + f_k(e_u)`` (``residual=True``, the default: the network learns a
per-domain correction of the collaborative embedding) or ``f_k(e_u)``, with ``e_u`` the shared user embedding
and ``f_k`` domain ``k``'s output of the network; items have one embedding table per domain. The cold users of
the target get the target head applied to their source-trained embedding. Users with no training history in
either domain fall back to popularity. Their only path to a cold user is the ID embedding trained on the source.

Axis conventions: ``B`` rows of a batch, ``n`` negatives per positive, ``D`` embedding width (``dim``), ``U``
users (shared by the domains), ``N_k`` items of domain ``k``; domain index 0 is the source and 1 the target.

Example:
    >>> from jaxrec import data, evaluate
    >>> ds = data.cold_start_split(data.synthetic(n_users=300, n_items=(80, 60))[0], "source", "target")
    >>> trained = train_mmoe(ds, source="source", target="target", config=MMoEConfig(epochs=2, progress=False))
    >>> res = evaluate.evaluate(trained.scorers["target"], ds, target="target", source="source", ks=(10,))
    >>> sorted(res)
    ['counts', 'full', 'sampled', 'sampled_std']
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec import checks, models
from jaxrec.data import CrossDomainDataset
from jaxrec.methods.common import Trained, check_pair, create_every_table, pair_outputs
from jaxrec.methods.joint import JointConfig, train_joint

__all__ = [
    "CoNetConfig",
    "CoNetUserTowers",
    "CrossStitchConfig",
    "CrossStitchUserTowers",
    "MMoEConfig",
    "PLEConfig",
    "STARConfig",
    "SharedBottomConfig",
    "UserNetworkModel",
    "train_conet",
    "train_cross_stitch",
    "train_mmoe",
    "train_ple",
    "train_shared_bottom",
    "train_star",
]

# ----------------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _NetworkConfig(JointConfig):
    """Adds what the user-network recipes share.

    Attributes:
      residual: user vector ``e_u + f_k(e_u)`` (True) or ``f_k(e_u)`` (False).
      tower_hidden: hidden widths of each domain's output tower (its last layer, of width ``dim``, is linear).
      dropout_rate: dropout inside the network during training.
    """

    residual: bool = True
    tower_hidden: tuple[int, ...] = ()
    dropout_rate: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        checks.positive_ints(f"{type(self).__name__}.tower_hidden", self.tower_hidden, allow_empty=True)
        checks.fraction(f"{type(self).__name__}.dropout_rate", self.dropout_rate, closed="left")


@dataclasses.dataclass(frozen=True)
class SharedBottomConfig(_NetworkConfig):
    """``shared_bottom``: :class:`~jaxrec.methods.JointConfig` plus the shared bottom.

    Attributes:
      bottom_features: widths of the bottom MLP shared by both domains (every layer activated).
    """

    bottom_features: tuple[int, ...] = (64,)

    def __post_init__(self):
        super().__post_init__()
        checks.positive_ints("SharedBottomConfig.bottom_features", self.bottom_features)


@dataclasses.dataclass(frozen=True)
class MMoEConfig(_NetworkConfig):
    """``mmoe``: :class:`~jaxrec.methods.JointConfig` plus the mixture.

    Attributes:
      num_experts: experts shared by both domains.
      expert_features: widths of each expert MLP (every layer activated).
    """

    num_experts: int = 4
    expert_features: tuple[int, ...] = (64,)

    def __post_init__(self):
        super().__post_init__()
        checks.positive_int("MMoEConfig.num_experts", self.num_experts)
        checks.positive_ints("MMoEConfig.expert_features", self.expert_features)


@dataclasses.dataclass(frozen=True)
class PLEConfig(_NetworkConfig):
    """``ple``: :class:`~jaxrec.methods.JointConfig` plus the extraction layers.

    Attributes:
      num_layers: extraction layers (1 = CGC).
      num_specific_experts: experts per domain, per layer.
      num_shared_experts: shared experts per layer.
      expert_features: widths of each expert MLP (every layer activated).
    """

    num_layers: int = 1
    num_specific_experts: int = 2
    num_shared_experts: int = 2
    expert_features: tuple[int, ...] = (64,)

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_layers", "num_specific_experts", "num_shared_experts"):
            checks.positive_int(f"PLEConfig.{name}", getattr(self, name))
        checks.positive_ints("PLEConfig.expert_features", self.expert_features)


@dataclasses.dataclass(frozen=True)
class STARConfig(_NetworkConfig):
    """``star``: :class:`~jaxrec.methods.JointConfig` plus the star-topology network (``tower_hidden`` is its
    hidden widths).

    Attributes:
      partitioned_norm: STAR's partitioned normalization of the input (per-example statistics).
    """

    tower_hidden: tuple[int, ...] = (64,)
    partitioned_norm: bool = False


@dataclasses.dataclass(frozen=True)
class CoNetConfig(_NetworkConfig):
    """``conet``: :class:`~jaxrec.methods.JointConfig` plus the cross network (``tower_hidden`` is each tower's
    hidden widths, every one of them cross-connected; at least one).

    Attributes:
      shared_transfer: one transfer matrix per layer for both directions (the paper's choice).
    """

    tower_hidden: tuple[int, ...] = (64,)
    shared_transfer: bool = True

    def __post_init__(self):
        super().__post_init__()
        checks.positive_ints("CoNetConfig.tower_hidden", self.tower_hidden)


@dataclasses.dataclass(frozen=True)
class CrossStitchConfig(_NetworkConfig):
    """``cross_stitch``: :class:`~jaxrec.methods.JointConfig` plus the stitched towers (``tower_hidden`` is each
    tower's hidden widths, every one of them followed by a cross-stitch unit; at least one)."""

    tower_hidden: tuple[int, ...] = (64,)

    def __post_init__(self):
        super().__post_init__()
        checks.positive_ints("CrossStitchConfig.tower_hidden", self.tower_hidden)


# ----------------------------------------------------------------------------------------------------------------
# Models (thin: vectors and scores, never losses)
# ----------------------------------------------------------------------------------------------------------------


class CoNetUserTowers(nn.Module):
    """:class:`jaxrec.models.CoNet` as a multi-domain user network: both towers read the same input.

    ``__call__(x [B, d_in], domain)`` returns tower ``domain``'s output ``[B, features[-1]]`` (a static int:
    0 = tower a, 1 = tower b); both towers are computed, since each feeds the other.

    Attributes:
      features: layer widths of each tower (the hidden ones cross-connected; the last linear).
      activation, dropout_rate, shared_transfer: as in :class:`jaxrec.models.CoNet`.
    """

    features: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    dropout_rate: float = 0.0
    shared_transfer: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, domain: int, *, deterministic: bool = True) -> jax.Array:
        if domain not in (0, 1):
            raise ValueError(f"CoNetUserTowers has two towers; domain must be 0 or 1, got {domain!r}")
        a, b = models.CoNet(
            tuple(self.features),
            activation=self.activation,
            dropout_rate=self.dropout_rate,
            shared_transfer=self.shared_transfer,
            name="conet",
        )(x, x, deterministic=deterministic)
        return (a, b)[domain]


class CrossStitchUserTowers(nn.Module):
    """:class:`jaxrec.models.CrossStitch` as a multi-domain user network: both towers read the same input.

    ``__call__(x [B, d_in], domain)`` returns tower ``domain``'s output ``[B, features[-1]]`` (a static int:
    0 = tower a, 1 = tower b); both towers are computed, since they are stitched together.

    Attributes:
      features: layer widths of each tower (a cross-stitch unit after every hidden one; the last linear).
      activation, dropout_rate: as in :class:`jaxrec.models.CrossStitch`.
    """

    features: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, domain: int, *, deterministic: bool = True) -> jax.Array:
        if domain not in (0, 1):
            raise ValueError(f"CrossStitchUserTowers has two towers; domain must be 0 or 1, got {domain!r}")
        a, b = models.CrossStitch(
            tuple(self.features), activation=self.activation, dropout_rate=self.dropout_rate, name="cross_stitch"
        )(x, x, deterministic=deterministic)
        return (a, b)[domain]


class UserNetworkModel(nn.Module):
    """Shared user embedding → a multi-domain user network → one user vector per domain; items per domain.

    ``user_vectors(users, k) = e + network(e, k)`` (``residual``) or ``network(e, k)``, ``e`` = the shared
    embedding ``[B, D]``. ``network`` is any module called as ``network(x [B, D], k, deterministic=...)`` that
    returns ``[B, D]``: :class:`jaxrec.models.SharedBottom`, :class:`~jaxrec.models.MMoE`,
    :class:`~jaxrec.models.PLE`, :class:`~jaxrec.models.STAR`, :class:`CoNetUserTowers`,
    :class:`CrossStitchUserTowers`.

    ``__call__(batch)`` takes ``{domain: {"users" [B], "items" [B], "negatives" [B, n], "mask" [B]}}`` for any
    subset of ``domains`` and returns ``{domain: {"pos" [B], "neg" [B, n], "user" [B, D], "pos_item" [B, D],
    "neg_item" [B, n, D], "mask" [B]}}`` (:func:`~jaxrec.methods.common.pair_outputs`).

    Attributes:
      n_users: U; n_items: ``N_k`` per domain; domains: names, in index order.
      network: the multi-domain user network (unbound; adopted as the submodule ``network``).
      dim: D.
      residual: add the shared embedding to the network's output.
    """

    n_users: int
    n_items: tuple[int, ...]
    domains: tuple[str, ...]
    network: nn.Module
    dim: int = 64
    residual: bool = True

    def setup(self):
        self.embed = models.CrossDomainEmbedding(self.n_users, tuple(self.n_items), self.dim)

    def user_vectors(self, users: jax.Array, domain: int, *, deterministic: bool = True) -> jax.Array:
        """``[B, D]`` vectors of ``users`` [B] in ``domain`` (static index)."""
        e = self.embed.users(users)
        h = self.network(e, domain, deterministic=deterministic)
        if h.shape != e.shape:
            raise ValueError(f"the user network must map [B, D] = {e.shape} to the same shape, got {h.shape}")
        return e + h if self.residual else h

    def item_vectors(self, domain: int) -> jax.Array:
        """``[N_domain, D]`` item table."""
        return self.embed.item_table(domain)

    def tables(self, context: Mapping[str, Any], domain: int) -> tuple[jax.Array, jax.Array]:
        """``(users [U, D], items [N_domain, D])`` for scoring every user (``context`` is unused here)."""
        del context
        return self.user_vectors(jnp.arange(self.n_users), domain), self.item_vectors(domain)

    def __call__(self, batch, *, deterministic: bool = True):
        create_every_table(self, self.embed, n_domains=len(self.n_items), user_vectors=self.user_vectors)
        out = {}
        for k, name in enumerate(self.domains):
            if name not in batch:
                continue
            b = batch[name]
            h = self.user_vectors(b["users"], k, deterministic=deterministic)
            pos_item, neg_item = self.embed.items(b["items"], k), self.embed.items(b["negatives"], k)
            reg = (h, pos_item, neg_item)
            out[name] = pair_outputs(h, pos_item, neg_item, b["mask"], reg, items=self.embed.item_table(k))
        return out


# ----------------------------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------------------------


def _train_network(ds, source, target, config: _NetworkConfig, network: nn.Module) -> Trained:
    """:func:`~jaxrec.methods.joint.train_joint` of a :class:`UserNetworkModel` over ``network``."""
    check_pair(ds, source, target)
    model = UserNetworkModel(
        ds.n_users,
        (ds.n_items(source), ds.n_items(target)),
        (source, target),
        network,
        config.dim,
        config.residual,
    )
    return train_joint(ds, model, source=source, target=target, config=config)


def train_shared_bottom(
    ds: CrossDomainDataset, *, source: str, target: str, config: SharedBottomConfig = SharedBottomConfig()
) -> Trained:
    """Shared-Bottom user network over the shared user embedding, BPR on both domains.

    Domain k's user vector is ``e + tower_k(bottom(e))``: the bottom MLP is shared, the towers are per domain.
    Defaults: :class:`SharedBottomConfig` (a bottom of one activated layer of 64, linear towers).
    """
    network = models.SharedBottom(
        num_domains=2,
        bottom_features=tuple(config.bottom_features),
        tower_features=tuple(config.tower_hidden) + (config.dim,),
        dropout_rate=config.dropout_rate,
    )
    return _train_network(ds, source, target, config, network)


def train_mmoe(ds: CrossDomainDataset, *, source: str, target: str, config: MMoEConfig = MMoEConfig()) -> Trained:
    """MMoE user network (Ma et al., KDD 2018) over the shared user embedding, BPR on both domains.

    Domain k's user vector is ``e + tower_k(Σ_e gate_k(e)_e · expert_e(e))`` (see the module docstring); the
    experts are shared, the gates and towers per domain. Defaults: :class:`MMoEConfig`.
    """
    network = models.MMoE(
        num_domains=2,
        num_experts=config.num_experts,
        expert_features=tuple(config.expert_features),
        tower_features=tuple(config.tower_hidden) + (config.dim,),
        dropout_rate=config.dropout_rate,
    )
    return _train_network(ds, source, target, config, network)


def train_ple(ds: CrossDomainDataset, *, source: str, target: str, config: PLEConfig = PLEConfig()) -> Trained:
    """PLE user network (Tang et al., RecSys 2020): shared and per-domain experts, BPR on both domains.

    Defaults: :class:`PLEConfig` (one extraction layer, i.e. CGC, with two shared and two experts per domain).
    """
    network = models.PLE(
        num_domains=2,
        num_layers=config.num_layers,
        num_specific_experts=config.num_specific_experts,
        num_shared_experts=config.num_shared_experts,
        expert_features=tuple(config.expert_features),
        tower_features=tuple(config.tower_hidden) + (config.dim,),
        dropout_rate=config.dropout_rate,
    )
    return _train_network(ds, source, target, config, network)


def train_star(ds: CrossDomainDataset, *, source: str, target: str, config: STARConfig = STARConfig()) -> Trained:
    """STAR user network (Sheng et al., CIKM 2021): shared ⊙ per-domain layer weights, BPR on both domains.

    Defaults: :class:`STARConfig` (one hidden layer of 64, no partitioned normalization).
    """
    network = models.STAR(
        num_domains=2,
        features=tuple(config.tower_hidden) + (config.dim,),
        dropout_rate=config.dropout_rate,
        partitioned_norm=config.partitioned_norm,
    )
    return _train_network(ds, source, target, config, network)


def train_conet(ds: CrossDomainDataset, *, source: str, target: str, config: CoNetConfig = CoNetConfig()) -> Trained:
    """CoNet (Hu et al., CIKM 2018): a user tower per domain, cross-connected, over the shared user embedding.

    Tower a (source) and tower b (target) both read ``e``; each hidden layer adds the other tower's previous
    layer through a transfer matrix. Defaults: :class:`CoNetConfig` (one cross-connected hidden layer of 64).
    """
    network = CoNetUserTowers(
        features=tuple(config.tower_hidden) + (config.dim,),
        dropout_rate=config.dropout_rate,
        shared_transfer=config.shared_transfer,
    )
    return _train_network(ds, source, target, config, network)


def train_cross_stitch(
    ds: CrossDomainDataset, *, source: str, target: str, config: CrossStitchConfig = CrossStitchConfig()
) -> Trained:
    """Cross-stitch networks (Misra et al., CVPR 2016): a user tower per domain over the shared user embedding,
    their hidden layers mixed by learned 2 × 2 stitch weights.

    Tower a (source) and tower b (target) both read ``e``; after each hidden layer ``[a; b] ← S_i [a; b]``.
    Defaults: :class:`CrossStitchConfig` (one stitched hidden layer of 64).
    """
    network = CrossStitchUserTowers(
        features=tuple(config.tower_hidden) + (config.dim,), dropout_rate=config.dropout_rate
    )
    return _train_network(ds, source, target, config, network)
