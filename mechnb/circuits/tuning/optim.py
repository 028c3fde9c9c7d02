"""Adam with a step counter per parameter entry, for circuit-tuning.

Circuit-tuning trains a changing subset of every parameter's entries and resets the optimiser state
of the entries outside the current circuit (:class:`~mechnb.circuits.tuning.CircuitTuning`). Adam's
bias correction (Kingma & Ba 2015, Alg. 1) divides the moments by ``1 - beta1^t`` and
``1 - beta2^t``; with one step counter ``t`` per parameter tensor (``torch.optim.Adam``), an entry
that joins the circuit at step ``t`` starts from zero moments but is corrected as if it had ``t``
steps of history: its first step is ``lr * (1 - beta1) / sqrt(1 - beta2) ~ 3.2 lr`` for large ``t``
(with the default betas) instead of Adam's ``lr``.

:class:`EntryAdam` keeps ``step`` as a tensor of the parameter's shape. Every entry's counter
advances at every step; circuit-tuning zeroes the counters together with the moments of the
entries outside the circuit (every state tensor of the parameter's shape), so an entry that joins
later is bias-corrected from its own first step and takes a fresh Adam step. For an entry that is
always trained the update is ``torch.optim.Adam`` / ``AdamW``'s:

    m <- beta1 m + (1 - beta1) g;   v <- beta2 v + (1 - beta2) g^2;   t <- t + 1
    p <- p - lr * (m / (1 - beta1^t)) / (sqrt(v) / sqrt(1 - beta2^t) + eps)

with ``g <- g + weight_decay * p`` first (Adam, L2) or ``p <- p (1 - lr * weight_decay)`` first
(AdamW, decoupled; Loshchilov & Hutter 2019).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from mechnb.train import OptimConfig

__all__ = ["EntryAdam", "entry_adam"]


class EntryAdam(torch.optim.Optimizer):
    """Adam / AdamW whose bias correction counts steps per parameter entry (module docstring).

    Args:
        params: the parameters.
        lr, betas, eps, weight_decay: as in ``torch.optim.Adam``.
        decoupled: ``True`` for AdamW's decoupled weight decay, ``False`` for Adam's L2 penalty.

    State per parameter: ``step`` (float64), ``exp_avg``, ``exp_avg_sq`` - all tensors of the parameter's
    shape. An entry trained at every step follows ``torch.optim.Adam`` / ``AdamW`` (single-tensor
    path) to the last bit: the bias corrections are computed in double and rounded like torch's.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One update of every parameter with a gradient."""
        if closure is not None:
            raise ValueError("closure: EntryAdam does not re-evaluate the loss; expected None")
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros_like(p, dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                if wd != 0:
                    if group["decoupled"]:
                        p.mul_(1 - lr * wd)
                    else:
                        g = g.add(p, alpha=wd)
                t = state["step"].add_(1)  # float64: exact counts, bias corrections as torch's (in double)
                m = state["exp_avg"].lerp_(g, 1 - beta1)
                v = state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                step_size = (lr / (1 - torch.pow(beta1, t))).to(p.dtype)
                bc2_sqrt = (1 - torch.pow(beta2, t)).sqrt().to(p.dtype)
                denom = (v.sqrt() / bc2_sqrt).add_(eps)
                p.addcdiv_(m * step_size, denom, value=-1.0)


def entry_adam(params: list[nn.Parameter], cfg: OptimConfig) -> EntryAdam:
    """An :class:`EntryAdam` with the settings of ``cfg`` (``optimizer`` ``"adam"`` or ``"adamw"``)."""
    if cfg.optimizer not in ("adam", "adamw"):
        raise ValueError(f"cfg: expected optimizer 'adam' or 'adamw' for EntryAdam, got {cfg.optimizer!r}")
    return EntryAdam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                     decoupled=cfg.optimizer == "adamw")
