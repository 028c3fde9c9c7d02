"""Experiments of notebook 03: toy point clouds and training-strategy variants compared with GW.

* :func:`toy_shapes` - small 2-D point clouds (an L, isometric and non-isometric copies, a
  circle) for drawing GW couplings (Mémoli 2011; Peyré, Cuturi & Solomon 2016).
* :func:`train_variants` - the zoo's ``modadd-mlp`` recipe trained with different regularisers
  (plain, strong weight decay, L1, pre-training on another operation), whose layer x layer GW
  matrices (:mod:`mechnb.gw`) show how the sub-networks move with the training strategy, as in
  Gao, Dhurandhar, Natesan Ramamurthy & Wei 2024 (https://arxiv.org/abs/2410.16484).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mechnb import zoo
from mechnb._checks import check_choice, check_positive_float, check_positive_int, resolve_device
from mechnb.metrics import modular_accuracy
from mechnb.models import MLP
from mechnb.tasks import ModularArithmetic
from mechnb.train import TrainConfig, cross_entropy_loss, train

__all__ = ["VARIANTS", "TrainedVariant", "toy_shapes", "train_variants"]


def toy_shapes(seed: int = 0) -> dict[str, np.ndarray]:
    """Small 2-D point clouds ``(k, 2)`` for drawing GW couplings.

    ``"L"`` (an asymmetric L of 7 points), ``"L moved"`` (rotated by 70 degrees, translated and
    with its points shuffled: isometric to ``"L"``), ``"L mirrored"`` (a reflection: also
    isometric, so GW cannot tell it from ``"L"``), ``"L stretched"`` (x-axis scaled by 2: not
    isometric) and ``"circle"`` (7 points on a circle). Deterministic given ``seed``.
    """
    L = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [2, 0], [0.5, 0.5]], dtype=np.float64)
    rng = np.random.default_rng(seed)
    a = np.deg2rad(70.0)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    perm = rng.permutation(len(L))
    ang = np.linspace(0, 2 * np.pi, len(L), endpoint=False)
    return {
        "L": L,
        "L moved": (L @ R.T + np.array([4.0, 1.0]))[perm],
        "L mirrored": L * np.array([-1.0, 1.0]),
        "L stretched": L * np.array([2.0, 1.0]),
        "circle": 1.5 * np.stack([np.cos(ang), np.sin(ang)], 1),
    }


@dataclass
class TrainedVariant:
    """One training strategy for the modular-addition MLP: the model and how well it does."""

    name: str
    description: str
    model: MLP
    config: TrainConfig
    train_acc: float
    test_acc: float
    pretrain: dict[str, Any] | None = None



VARIANTS = ("scratch", "weight_decay", "l1", "finetune")


def _accuracy(model: MLP, task: ModularArithmetic) -> tuple[float, float]:
    """Train and test accuracy of ``model`` on ``task``'s split."""
    return modular_accuracy(model, task, split="train"), modular_accuracy(model, task, split="test")


def _fit_modular(model: MLP, task: ModularArithmetic, cfg: TrainConfig, dev: torch.device, progress: bool,
                 desc: str) -> tuple[float, float]:
    """Full-batch training of ``model`` on ``task``'s training pairs; returns (train, test) accuracy."""
    tr, _ = task.split()
    trx, try_ = tr.x.to(dev), tr.y.to(dev)
    train(model, lambda step, g: (trx, try_), lambda m, b: cross_entropy_loss(m(b[0]), b[1]), cfg, device=dev,
          progress=progress, desc=desc)
    return _accuracy(model, task)


def train_variants(
    variants: Sequence[str] = VARIANTS,
    *,
    steps: int | None = None,
    P: int | None = None,
    hidden: Sequence[int] | None = None,
    weight_decay: float | None = None,
    l1: float = 2e-6,
    pretrain_op: str = "mul",
    pretrain_steps: int | None = None,
    seed: int | None = None,
    use_zoo: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, TrainedVariant]:
    """Train the ``modadd-mlp`` architecture on ``a + b mod P`` with different training strategies (Gao et al. 2024).

    Every variant follows the zoo recipe ``zoo.RECIPES["modadd-mlp"]`` (architecture and its
    initialisation, task split, optimiser, schedule, full batch, seed - hence the same starting
    weights) and changes only the regulariser:

    * ``"scratch"``: plain AdamW (weight decay 0.01);
    * ``"weight_decay"``: strong decoupled weight decay (default: the recipe's value);
    * ``"l1"``: weight decay 0.01 plus an L1 penalty ``l1 * sum |W|`` on every weight matrix
      (``TrainConfig.l1``), which drives many weights to zero;
    * ``"finetune"``: first ``pretrain_steps`` (default ``steps``) on ``a (pretrain_op) b mod P``
      (``"sub"``, ``"mul"`` or ``"sq_sum"``), then ``steps`` on addition, both plain AdamW.

    Args:
        steps, P, hidden, weight_decay, seed: override the recipe (``None`` keeps it); ``P`` and
            ``hidden`` change the architecture (``sizes = [2P, *hidden, P]``).
        use_zoo: when ``"weight_decay"`` is exactly the recipe (no override), load the zoo's
            ``modadd-mlp`` checkpoint instead of repeating its training run.

    Returns:
        ``name -> TrainedVariant`` (model in eval mode, train/test accuracy on addition).
    """
    recipe = zoo.RECIPES["modadd-mlp"]
    for v in variants:
        check_choice("variants", v, VARIANTS)
    check_choice("pretrain_op", pretrain_op, ["sub", "mul", "sq_sum"])
    P = check_positive_int("P", P, minimum=2) if P is not None else int(recipe.task_kwargs["P"])
    hid = list(hidden) if hidden is not None else list(recipe.model_kwargs["sizes"][1:-1])
    sizes = [2 * P] + [check_positive_int("hidden", h) for h in hid] + [P]
    rc = recipe.train
    steps = check_positive_int("steps", steps) if steps is not None else rc.steps
    pre_steps = check_positive_int("pretrain_steps", pretrain_steps) if pretrain_steps is not None else steps
    wd = check_positive_float("weight_decay", weight_decay) if weight_decay is not None else rc.weight_decay
    l1 = check_positive_float("l1", l1)
    seed = rc.seed if seed is None else seed
    dev = resolve_device(device)
    task = ModularArithmetic(P, "add", train_frac=recipe.task_kwargs.get("train_frac", 0.8),
                             seed=recipe.task_kwargs.get("seed", 0))
    base = {**rc.to_dict(), "steps": steps, "weight_decay": 0.01, "warmup_steps": min(rc.warmup_steps, steps // 10),
            "seed": seed, "log_every": steps}
    configs = {"scratch": TrainConfig(**base),
               "weight_decay": TrainConfig(**{**base, "weight_decay": wd}),
               "l1": TrainConfig(**{**base, "l1": l1}),
               "finetune": TrainConfig(**base)}
    descriptions = {"scratch": "plain AdamW (weight decay 0.01)",
                    "weight_decay": f"strong weight decay ({wd:g})",
                    "l1": f"L1 penalty on the weights ({l1:g})",
                    "finetune": f"pre-trained on a {pretrain_op} b mod {P}, fine-tuned on a + b"}
    is_recipe = (steps == rc.steps and sizes == list(recipe.model_kwargs["sizes"]) and wd == rc.weight_decay
                 and seed == rc.seed)
    out: dict[str, TrainedVariant] = {}
    for name in variants:
        if name == "weight_decay" and is_recipe and use_zoo and "modadd-mlp" in zoo.manifest().get("entries", {}):
            model = zoo.load("modadd-mlp", device=dev)[0]  # the very same training run, already done
            tr_acc, te_acc = _accuracy(model, task)
            out[name] = TrainedVariant(name, descriptions[name] + " - the zoo's modadd-mlp", model, configs[name],
                                       tr_acc, te_acc)
            continue
        torch.manual_seed(seed)
        model = MLP(sizes).to(dev)
        if recipe.extra.get("init") == "identity":
            with torch.no_grad():
                model.identity_init_()
        pre = None
        if name == "finetune":
            pre_task = ModularArithmetic(P, pretrain_op, train_frac=task.train_frac, seed=task.seed)
            pre_cfg = TrainConfig(**{**base, "steps": pre_steps, "log_every": pre_steps})
            tr_acc, te_acc = _fit_modular(model, pre_task, pre_cfg, dev, progress, f"pretrain {pretrain_op}")
            pre = {"op": pretrain_op, "steps": pre_steps, "train_acc": tr_acc, "test_acc": te_acc}
        tr_acc, te_acc = _fit_modular(model, task, configs[name], dev, progress, name)
        out[name] = TrainedVariant(name, descriptions[name], model.eval(), configs[name], tr_acc, te_acc, pre)
    return out
