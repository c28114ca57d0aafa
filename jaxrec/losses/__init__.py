"""Losses: task losses, domain-discrepancy terms, the adversarial domain loss, λ schedules, the combined loss.

Modules, in import order (each imports only the ones above it):

* ``checks`` — static shape/dtype/value checks and mask helpers shared by the others
* ``task`` — per-example task losses (``mse``, ``sigmoid_bce``, ``bpr``, ``sampled_softmax``,
  ``in_batch_softmax``) and ``mean_where`` to reduce them
* ``discrepancy`` — ``D(hs [n, dim], ht [m, dim]) -> scalar``: ``mean_l2``, ``linear_mmd``, ``mmd``, ``coral``,
  ``sliced_wasserstein``
* ``adversarial`` — ``domain_adversarial_loss`` on domain-classifier logits, and its discrepancy form
* ``schedules`` — ``step -> λ`` schedules (the DANN ramp, constant, linear warm-up)
* ``registry`` — :data:`DISCREPANCIES` (name → function) and :func:`get_discrepancy` (name + options → function)
* ``combined`` — ``combined_loss``: ``Σ_d w_d · L_task(d) + λ · D`` with its parts

Axis conventions: ``batch`` examples (task losses return ``[batch]``), ``num_neg`` negatives per example, ``n`` /
``m`` rows of the source / target domain, ``dim`` the representation width. Masks (``where=``, ``hs_mask=``, ...)
are boolean and mark padding, so that shapes stay static under ``jit``; an all-masked input gives 0, never NaN.
"""

from jaxrec.losses.adversarial import adversarial_discrepancy, domain_adversarial_loss
from jaxrec.losses.checks import ArrayLike
from jaxrec.losses.combined import combined_loss
from jaxrec.losses.discrepancy import coral, linear_mmd, mean_l2, mmd, sliced_wasserstein
from jaxrec.losses.registry import DISCREPANCIES, Discrepancy, get_discrepancy
from jaxrec.losses.schedules import Schedule, constant_schedule, dann_lambda_schedule, linear_warmup_schedule
from jaxrec.losses.task import bpr, in_batch_softmax, mean_where, mse, sampled_softmax, sigmoid_bce

__all__ = [
    "DISCREPANCIES",
    "ArrayLike",
    "Discrepancy",
    "Schedule",
    "adversarial_discrepancy",
    "bpr",
    "combined_loss",
    "constant_schedule",
    "coral",
    "dann_lambda_schedule",
    "domain_adversarial_loss",
    "get_discrepancy",
    "in_batch_softmax",
    "linear_mmd",
    "linear_warmup_schedule",
    "mean_l2",
    "mean_where",
    "mmd",
    "mse",
    "sampled_softmax",
    "sigmoid_bce",
    "sliced_wasserstein",
]
