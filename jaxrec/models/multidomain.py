"""Multi-domain networks: one input row and its domain index → that domain's output.

`SharedBottom` shares one bottom network and `MMoE` / `PLE` mix experts through per-domain gates, each before
a tower per domain; `STAR` multiplies shared and per-domain layer weights. Every module takes ``domain`` as
described in `jaxrec.models.layers` (a static int, an integer array ``[batch]``, or ``None`` for every domain),
computes every domain's branch (K is small) and selects; under ``jit`` branches that a static ``domain`` does not use
are removed as dead code.

Axis conventions: ``batch`` (B) rows; ``d_in`` input width; ``domains`` (K); ``experts`` (E) experts of a
mixture; ``d_out`` the width of a tower's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec import checks
from jaxrec.models.layers import (
    MLP,
    Activation,
    Array,
    check_float_rank,
    check_tower,
    parse_domain,
    resolve_activation,
    select_domain,
)

# Per-expert LeCun-normal init for stacked kernels [experts, d_in, d_out] (fan-in = d_in, each expert alone).
_STACKED_KERNEL_INIT = nn.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,)
)


class _ExpertBank(nn.Module):
    """E independent MLP experts (every layer activated) run as stacked einsums: x [B, d_in] → [B, E, D]."""

    num_experts: int
    features: Sequence[int]
    activation: Activation
    dropout_rate: float

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        act = resolve_activation(self.activation)
        h = x
        for i, width in enumerate(self.features):
            kernel = self.param(f"kernel_{i}", _STACKED_KERNEL_INIT, (self.num_experts, h.shape[-1], width))
            bias = self.param(f"bias_{i}", nn.initializers.zeros, (self.num_experts, width))
            h = jnp.einsum("bi,eio->beo" if i == 0 else "bei,eio->beo", h, kernel) + bias
            h = act(h)
            if self.dropout_rate > 0:
                h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return h


def _towers(module: nn.Module, h: Array | Sequence[Array], *, deterministic: bool) -> Array:
    """Per-domain output towers ``tower_{k}`` on h [B, K, D] (or a list of K [B, D]) → [B, K, d_out]."""
    outs = [
        MLP(
            tuple(module.tower_features),
            activation=module.activation,
            dropout_rate=module.dropout_rate,
            name=f"tower_{k}",
        )(h[:, k] if isinstance(h, jax.Array) else h[k], deterministic=deterministic)
        for k in range(module.num_domains)
    ]
    return jnp.stack(outs, axis=1)


def _check_multidomain(module: nn.Module, *fields: str) -> None:
    checks.positive_int("num_domains", module.num_domains)
    check_tower(module, *fields)


def _check_input(x: Array) -> None:
    check_float_rank(x, 2, "x", "[batch, d_in]")


class SharedBottom(nn.Module):
    """Shared-Bottom: one shared MLP, then a tower per domain.

    Attributes:
      num_domains: K.
      bottom_features: widths of the shared bottom (all layers activated).
      tower_features: widths of each domain tower (last = d_out, linear).
      activation, dropout_rate: as in `MLP`.

    Example:
      >>> m = SharedBottom(num_domains=3, bottom_features=(8,), tower_features=(4, 1))
      >>> params = m.init(jax.random.key(0), jnp.ones((2, 5)), None)
      >>> m.apply(params, jnp.ones((2, 5)), jnp.array([0, 2])).shape
      (2, 1)
    """

    num_domains: int
    bottom_features: Sequence[int] = (64,)
    tower_features: Sequence[int] = (32, 1)
    activation: Activation = "relu"
    dropout_rate: float = 0.0

    def __post_init__(self):
        _check_multidomain(self, "bottom_features", "tower_features")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, domain: Any, *, deterministic: bool = True) -> Array:
        """``x`` [B, d_in] → ``[B, d_out]`` (``[B, K, d_out]`` for ``domain=None``)."""
        _check_input(x)
        dom = parse_domain(domain, self.num_domains, x.shape[0])
        h = MLP(
            tuple(self.bottom_features),
            activation=self.activation,
            dropout_rate=self.dropout_rate,
            activate_final=True,
            name="bottom",
        )(x, deterministic=deterministic)
        return select_domain(_towers(self, [h] * self.num_domains, deterministic=deterministic), dom)


class MMoE(nn.Module):
    """Multi-gate Mixture-of-Experts (Ma et al., 2018): shared experts, a softmax gate and a tower per domain.

    Attributes:
      num_domains: K.
      num_experts: E.
      expert_features: widths of each expert MLP (all layers activated; last = expert width).
      tower_features: widths of each domain tower (last = d_out, linear).
      activation, dropout_rate: as in `MLP`.

    Example:
      >>> m = MMoE(num_domains=2, num_experts=3, expert_features=(8,), tower_features=(1,))
      >>> params = m.init(jax.random.key(0), jnp.ones((4, 5)), None)
      >>> out, gates = m.apply(params, jnp.ones((4, 5)), 1, return_gates=True)
      >>> out.shape, gates.shape
      ((4, 1), (4, 2, 3))
    """

    num_domains: int
    num_experts: int = 4
    expert_features: Sequence[int] = (64,)
    tower_features: Sequence[int] = (32, 1)
    activation: Activation = "relu"
    dropout_rate: float = 0.0

    def __post_init__(self):
        _check_multidomain(self, "expert_features", "tower_features")
        checks.positive_int("num_experts", self.num_experts)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, x: Array, domain: Any, *, deterministic: bool = True, return_gates: bool = False
    ) -> Array | tuple[Array, Array]:
        """``x`` [B, d_in] → ``[B, d_out]`` (``[B, K, d_out]`` for ``domain=None``).

        With ``return_gates=True`` also returns every domain's gate weights ``[B, K, E]`` (rows sum to 1).
        """
        _check_input(x)
        dom = parse_domain(domain, self.num_domains, x.shape[0])
        experts = _ExpertBank(
            self.num_experts, tuple(self.expert_features), self.activation, self.dropout_rate, name="experts"
        )(x, deterministic=deterministic)  # [B, E, De]
        logits = nn.Dense(self.num_domains * self.num_experts, name="gates")(x)
        gates = jax.nn.softmax(logits.reshape(x.shape[0], self.num_domains, self.num_experts), axis=-1)
        mixed = jnp.einsum("bke,bed->bkd", gates, experts)  # [B, K, De]
        out = select_domain(_towers(self, mixed, deterministic=deterministic), dom)
        return (out, gates) if return_gates else out


class PLE(nn.Module):
    """Progressive Layered Extraction (Tang et al., 2020) with per-domain and shared experts.

    Each extraction layer has ``num_specific_experts`` experts per domain and ``num_shared_experts`` shared
    experts. Domain k's gate mixes its own and the shared experts (input: domain k's representation); the
    shared gate mixes all experts (input: the shared representation) and feeds the next layer. The first layer
    reads ``x`` everywhere; the last layer has no shared gate. A tower per domain reads the domain's output.

    Attributes:
      num_domains: K.
      num_layers: extraction layers (>= 1; 1 is CGC).
      num_specific_experts, num_shared_experts: experts per domain / shared, per layer (each >= 1).
      expert_features: widths of each expert MLP (all layers activated).
      tower_features: widths of each domain tower (last = d_out, linear).
      activation, dropout_rate: as in `MLP`.

    Example:
      >>> m = PLE(num_domains=2, num_layers=2, expert_features=(8,), tower_features=(1,))
      >>> params = m.init(jax.random.key(0), jnp.ones((4, 5)), None)
      >>> out, gates = m.apply(params, jnp.ones((4, 5)), jnp.array([0, 1, 1, 0]), return_gates=True)
      >>> out.shape, gates[0]["domain"].shape, gates[0]["shared"].shape, sorted(gates[1])
      ((4, 1), (4, 2, 4), (4, 6), ['domain'])
    """

    num_domains: int
    num_layers: int = 1
    num_specific_experts: int = 2
    num_shared_experts: int = 2
    expert_features: Sequence[int] = (64,)
    tower_features: Sequence[int] = (32, 1)
    activation: Activation = "relu"
    dropout_rate: float = 0.0

    def __post_init__(self):
        _check_multidomain(self, "expert_features", "tower_features")
        for field in ("num_layers", "num_specific_experts", "num_shared_experts"):
            checks.positive_int(field, getattr(self, field))
        super().__post_init__()

    @nn.compact
    def __call__(
        self, x: Array, domain: Any, *, deterministic: bool = True, return_gates: bool = False
    ) -> Array | tuple[Array, tuple[dict[str, Array], ...]]:
        """``x`` [B, d_in] → ``[B, d_out]`` (``[B, K, d_out]`` for ``domain=None``).

        With ``return_gates=True`` also returns, per layer, ``{"domain": [B, K, Es + Sh], "shared":
        [B, K * Es + Sh]}`` (no ``"shared"`` in the last layer); gate rows sum to 1. Expert order in a domain
        gate: that domain's experts, then the shared ones; in the shared gate: domain 0's, …, domain K-1's,
        then the shared ones.
        """
        _check_input(x)
        dom = parse_domain(domain, self.num_domains, x.shape[0])
        bank = {
            "features": tuple(self.expert_features),
            "activation": self.activation,
            "dropout_rate": self.dropout_rate,
        }
        h_dom, h_shared, all_gates = [x] * self.num_domains, x, []
        for layer in range(self.num_layers):
            specific = [
                _ExpertBank(self.num_specific_experts, name=f"layer{layer}_domain{k}_experts", **bank)(
                    h_dom[k], deterministic=deterministic
                )
                for k in range(self.num_domains)
            ]  # K × [B, Es, De]
            shared = _ExpertBank(self.num_shared_experts, name=f"layer{layer}_shared_experts", **bank)(
                h_shared, deterministic=deterministic
            )  # [B, Sh, De]
            n_gate = self.num_specific_experts + self.num_shared_experts
            new_dom, dom_gates = [], []
            for k in range(self.num_domains):
                g = jax.nn.softmax(nn.Dense(n_gate, name=f"layer{layer}_domain{k}_gate")(h_dom[k]), axis=-1)
                new_dom.append(jnp.einsum("be,bed->bd", g, jnp.concatenate([specific[k], shared], axis=1)))
                dom_gates.append(g)
            gates = {"domain": jnp.stack(dom_gates, axis=1)}
            if layer < self.num_layers - 1:
                n_all = self.num_domains * self.num_specific_experts + self.num_shared_experts
                g = jax.nn.softmax(nn.Dense(n_all, name=f"layer{layer}_shared_gate")(h_shared), axis=-1)
                h_shared = jnp.einsum("be,bed->bd", g, jnp.concatenate(specific + [shared], axis=1))
                gates["shared"] = g
            h_dom = new_dom
            all_gates.append(gates)
        out = select_domain(_towers(self, h_dom, deterministic=deterministic), dom)
        return (out, tuple(all_gates)) if return_gates else out


class STAR(nn.Module):
    """STAR topology FCN (Sheng et al., 2021): layer weights ``W_shared ⊙ W_domain``, bias ``b_shared + b_domain``.

    Layer i of domain k computes ``h @ (W_i ⊙ W_i^k) + (b_i + b_i^k)``; hidden layers are activated, the last
    is linear. Domain weights start at ones and domain biases at zeros, so a fresh STAR equals an `MLP` with the
    shared weights in every domain.

    Optional partitioned normalization of the input (``partitioned_norm=True``):
    ``(γ ⊙ γ_k) · (x − μ(x)) / sqrt(σ²(x) + ε) + (β + β_k)`` with **per-example** statistics (like LayerNorm),
    not the paper's per-domain batch statistics — this keeps the module stateless (no ``batch_stats``).

    Parameters: ``shared_kernel_{i}`` [d_i, d_{i+1}], ``shared_bias_{i}`` [d_{i+1}], ``domain_kernel_{i}``
    [K, d_i, d_{i+1}], ``domain_bias_{i}`` [K, d_{i+1}]; with PN ``pn_scale``, ``pn_bias`` [d_in] and
    ``pn_domain_scale``, ``pn_domain_bias`` [K, d_in].

    Cost: with a per-row ``domain`` array (or ``None``) all K domain streams are computed (K × one tower).

    Attributes:
      num_domains: K.
      features: layer widths (last = d_out).
      activation, dropout_rate: as in `MLP`.
      partitioned_norm: normalize the input as above.

    Example:
      >>> m = STAR(num_domains=3, features=(8, 1))
      >>> params = m.init(jax.random.key(0), jnp.ones((2, 5)), None)
      >>> m.apply(params, jnp.ones((2, 5)), jnp.array([2, 0])).shape
      (2, 1)
    """

    num_domains: int
    features: Sequence[int] = (64, 32, 1)
    activation: Activation = "relu"
    dropout_rate: float = 0.0
    partitioned_norm: bool = False

    def __post_init__(self):
        _check_multidomain(self, "features")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, domain: Any, *, deterministic: bool = True) -> Array:
        """``x`` [B, d_in] → ``[B, d_out]`` (``[B, K, d_out]`` for ``domain=None``)."""
        _check_input(x)
        dom = parse_domain(domain, self.num_domains, x.shape[0])
        K, act = self.num_domains, resolve_activation(self.activation)
        # Domains whose streams are computed: only the static one, else all of them.
        idx = slice(dom, dom + 1) if isinstance(dom, int) else slice(None)
        d_in = x.shape[-1]
        h = jnp.broadcast_to(x[:, None], (x.shape[0], 1 if isinstance(dom, int) else K, d_in))  # [B, K', d]
        if self.partitioned_norm:
            scale = self.param("pn_scale", nn.initializers.ones, (d_in,))
            bias = self.param("pn_bias", nn.initializers.zeros, (d_in,))
            d_scale = self.param("pn_domain_scale", nn.initializers.ones, (K, d_in))[idx]
            d_bias = self.param("pn_domain_bias", nn.initializers.zeros, (K, d_in))[idx]
            mean = jnp.mean(h, axis=-1, keepdims=True)
            var = jnp.var(h, axis=-1, keepdims=True)
            h = (h - mean) * jax.lax.rsqrt(var + 1e-6) * (scale * d_scale) + (bias + d_bias)
        lecun = nn.initializers.lecun_normal()
        for i, width in enumerate(self.features):
            w = self.param(f"shared_kernel_{i}", lecun, (h.shape[-1], width))
            b = self.param(f"shared_bias_{i}", nn.initializers.zeros, (width,))
            wd = self.param(f"domain_kernel_{i}", nn.initializers.ones, (K, h.shape[-1], width))[idx]
            bd = self.param(f"domain_bias_{i}", nn.initializers.zeros, (K, width))[idx]
            h = jnp.einsum("bki,kio->bko", h, w * wd) + (b + bd)
            if i < len(self.features) - 1:
                h = act(h)
                if self.dropout_rate > 0:
                    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return h[:, 0] if isinstance(dom, int) else select_domain(h, dom)
