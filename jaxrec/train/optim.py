"""Optimizers: the Optax registry by name, and :class:`OptimizerConfig` → ``optax.GradientTransformation``.

The transformation built by :func:`make_optimizer` is, outermost first: ``optax.apply_if_finite`` (when
``skip_nonfinite``) ∘ ``optax.clip_by_global_norm`` (when ``clip_norm``) ∘ the named optimizer, whose learning
rate is a constant or ``optax.warmup_cosine_decay_schedule`` (when ``warmup_steps`` or ``decay_steps``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import optax

OPTIMIZERS: Mapping[str, Callable[..., optax.GradientTransformation]] = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "adagrad": optax.adagrad,
    "sgd": optax.sgd,
    "rmsprop": optax.rmsprop,
    "lamb": optax.lamb,
    "lion": optax.lion,
}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """An Optax optimizer by name, with an optional warm-up + cosine schedule and gradient clipping.

    Attributes:
      name: one of :data:`OPTIMIZERS`.
      learning_rate: peak learning rate.
      weight_decay: decoupled weight decay (``adamw``, ``lamb``, ``lion`` only).
      clip_norm: clip the global gradient norm to this value first (None: no clipping).
      warmup_steps: linear warm-up from 0 (0: none).
      decay_steps: cosine decay to 0 over this many steps after warm-up (None: constant).
      skip_nonfinite: wrap in ``optax.apply_if_finite`` so a step with a non-finite gradient is skipped and
        counted instead of raising (see ``TrainConfig.nan_policy``).
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: float | None = None
    warmup_steps: int = 0
    decay_steps: int | None = None
    skip_nonfinite: bool = False

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; valid names: {sorted(OPTIMIZERS)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0")
        if self.weight_decay and self.name not in ("adamw", "lamb", "lion"):
            raise ValueError(
                f"weight_decay={self.weight_decay} needs a decoupled-decay optimizer (adamw, lamb, lion), "
                f"got {self.name!r}"
            )
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm={self.clip_norm} must be > 0 or None")
        if self.warmup_steps < 0 or (self.decay_steps is not None and self.decay_steps < 1):
            raise ValueError(f"warmup_steps={self.warmup_steps} must be >= 0 and decay_steps={self.decay_steps} >= 1")


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """The Optax transformation described by ``config``.

    Args:
      config: the optimizer's name, learning rate (or schedule), clipping and weight decay.

    Returns:
      The ``optax.GradientTransformation``.
    """
    lr: Any = config.learning_rate
    if config.warmup_steps or config.decay_steps:
        lr = optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=config.learning_rate,
            warmup_steps=config.warmup_steps,
            decay_steps=config.warmup_steps + (config.decay_steps or 10**12),
        )
    kwargs = {"weight_decay": config.weight_decay} if config.name in ("adamw", "lamb", "lion") else {}
    tx = OPTIMIZERS[config.name](lr, **kwargs)
    if config.clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
    if config.skip_nonfinite:
        tx = optax.apply_if_finite(tx, max_consecutive_errors=10)
    return tx
