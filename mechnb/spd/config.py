"""Settings of a Stochastic Parameter Decomposition run (:class:`SPDConfig`).

The defaults and :meth:`SPDConfig.for_model` presets follow Bushnaq, Braun & Sharkey (2025),
*Stochastic Parameter Decomposition*, https://arxiv.org/abs/2506.20790 (hyperparameters of its
experiments) and the configs of the paper version of the authors' code
(goodfire-ai/spd, tag ``v1`` and the June-2025 ``tms_5-2`` / ``tms_40-10`` / ``tms_5-2-id`` /
``resid_mlp1`` configs).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from mechnb._checks import check_choice, check_positive_float, check_positive_int, check_probability
from mechnb.io import saveable

__all__ = ["SPDConfig"]


# Paper settings (authors' configs, June 2025 / tag v1). ``steps`` and ``batch_size`` are theirs.
_PAPER: dict[str, dict[str, Any]] = {
    "tms-5-2": dict(C=20, steps=40_000, batch_size=4096, lr=1e-3, lr_schedule="cosine",
                    importance_minimality=3e-3, p=1.0),
    "tms-40-10": dict(C=200, steps=40_000, batch_size=4096, lr=1e-3, lr_schedule="cosine",
                      importance_minimality=1e-4, p=2.0),
    "resid-mlp-1": dict(C=100, steps=30_000, batch_size=2048, lr=2e-3, lr_schedule="constant",
                        importance_minimality=1e-5, p=2.0),
    # paper appendix (2- and 3-layer residual MLPs): C per matrix, 50k / 200k steps
    "resid-mlp-2": dict(C=400, steps=50_000, batch_size=2048, lr=1e-3, lr_schedule="constant",
                        importance_minimality=1e-5, p=2.0),
    "resid-mlp-3": dict(C=500, steps=200_000, batch_size=2048, lr=1e-3, lr_schedule="constant",
                        importance_minimality=5e-6, p=2.0, ci_hidden=128),
}

# mechnb's CPU recipes: same losses and coefficients, far fewer steps. They rely on the exact
# zero-row compression of the sparse TMS / residual-MLP batches (``compress_zero_rows``), a
# short faithfulness warm-up (``U V^T := W`` before the stochastic losses start, as in later
# versions of the authors' code) and a larger learning rate. For TMS 5-2 they start the
# importance-minimality exponent at p = 2 and anneal it to the paper's p = 1 over the first
# half: with p = 2 the push on a small importance is gentle (gradient 2g), so subcomponents
# are not switched off before they have specialised; starting at p = 1 with the larger
# learning rate, about one seed in seven merged two features into one subcomponent and
# ended with 4 alive. TMS 40-10 (C = 200) uses batch 1024: its CI MLPs dominate the step and
# its batches have few all-zero rows; p is annealed from the paper's 2 to 1 (with p = 2
# throughout, ~50 subcomponents keep a small importance on rare inputs), over 4000 steps with a
# linear learning-rate warm-up over the first 10 %. Without the warm-up the full step of 1e-2
# from the first step merged two features into one subcomponent on seed 1 (39 alive, at 2000
# and 4000 steps, at lr 1e-2 and 5e-3), and 2000 steps left a dead subcomponent at CI max 0.07
# on seed 0; a longer p = 2 phase (38 alive), a smaller importance-minimality coefficient (39),
# the leaky-backward lower sigmoid (39) or vector CI functions (36) did not prevent the merge.
# The warm-up fixes seeds 0 and 1 but NOT the recipe: on seeds 2-4 (spd_seeds.json, 11 runs over
# three kernel families) seed 2 ends with a dead subcomponent at CI max 0.05-0.06 (no margin) and
# seeds 3 and 4 merge two features (39 alive), the same on every kernel family - the outcome
# depends on the seed, not on the CPU. A 25 % warm-up meets the bar on seeds 0, 3 and 4 but
# merges two features on seed 1, and batch 2048 leaves seed 3 undecided (spd_seeds.json,
# "variant_runs"): which seeds merge moves with the schedule, and no schedule tried holds on 5 of 5.
# A merge forms while the alive subcomponents fall from ~100 to ~40 (steps 250-1500): if one of a set
# of overlapping subcomponents dies first, the rest cover four features with three. Half the peak lr
# (5e-3) slows that die-off and removes the merges of seeds 3 and 4, but merges seed 1, and leaves a
# dead subcomponent at CI max 0.07-0.08 on two of three seeds even at 6000 steps.
# Not a tested bar (≈ 6 CPU-minutes a decomposition). The residual MLPs' step is dominated by the model itself (the 1000-d embedding
# and unembedding run in each of the four forward passes), so their recipe uses batch 512 and
# 4000 steps, 1/30 of the paper's samples for resid-mlp-1 (30k steps at batch 2048), and an
# importance-minimality coefficient of 1e-4, 10x the paper's: with the paper's 1e-5 at this budget
# mlp_in kept 62 off-diagonal one-hot CIs above 0.1 and mlp_out was stuck between a dense and a
# per-feature pattern (70 alive, each feature using ~15); with 1e-4 mlp_in is the identity
# (0 off-diagonal) but mlp_out goes towards one subcomponent per feature (86-88 alive) instead of
# the paper's d_mlp dense subcomponents (one rank-d_mlp component, Sec. 4.3). Vector CI functions,
# a constant lr 2e-3 with p = 2 (the paper's) and the delta component with coefficient 1e-3 (the
# authors' current config) did not give the dense mlp_out either. The 2- and 3-layer models use
# C = 128 (> 102 features) with the same schedule. Measured in ``benchmarks/bench_spd.py --resid``.
_RESID_FAST = dict(steps=4_000, batch_size=512, lr=5e-3, lr_schedule="cosine", importance_minimality=1e-4, p=2.0,
                   p_anneal_final=1.0, p_anneal_end_frac=0.5, faithfulness_warmup_steps=200)
_FAST: dict[str, dict[str, Any]] = {
    "tms-5-2": dict(C=20, steps=2_000, batch_size=4096, lr=5e-3, lr_schedule="cosine",
                    importance_minimality=3e-3, p=2.0, p_anneal_final=1.0, p_anneal_end_frac=0.5,
                    faithfulness_warmup_steps=200),
    "tms-40-10": dict(C=200, steps=4_000, batch_size=1024, lr=1e-2, lr_schedule="cosine", lr_warmup_frac=0.1,
                      importance_minimality=1e-4, p=2.0, p_anneal_final=1.0, p_anneal_end_frac=0.5,
                      faithfulness_warmup_steps=200),
    "resid-mlp-1": dict(_RESID_FAST, C=100),
    "resid-mlp-2": dict(_RESID_FAST, C=128),
    "resid-mlp-3": dict(_RESID_FAST, C=128),
}


# A language model (no paper setting; mechnb's own budgets, "paper" = the full one): the four MLP
# weight matrices of the zoo's tiny-lm (2 layers, d_model 64, d_mlp 256), reconstruction by the
# per-token KL of the next-token distributions (the paper's LM experiments), batches of 32
# corpus sentences (512 tokens), C = 96 per matrix (rank <= 64). Full: 1000 steps, a few CPU
# minutes; fast: 100 steps (~20-40 s on one loaded CPU thread), enough for the stochastic KL to
# fall to ~1% of the all-ablated baseline; rounded masks stay far worse (1500 steps measured
# here: stochastic KL 0.003, rounded 1.6, ablated 1.8 - the importances keep many small
# contributions below 1/2). Measured in benchmarks/bench_spd.py (--lm) and tests/test_spd_lm.py.
_LM = dict(C=96, batch_size=32, lr=5e-3, lr_schedule="cosine", importance_minimality=1e-3, p=2.0,
           p_anneal_final=1.0, p_anneal_end_frac=0.5, faithfulness_warmup_steps=200, output_loss="kl",
           n_eval_batches=4, log_every=50)
_PAPER["tiny-lm-mlp"] = dict(_LM, steps=1_000)
_FAST["tiny-lm-mlp"] = dict(_LM, steps=100)

# The identity-hidden-layer variants (``-id``) use the settings of the model they extend.
for _table in (_PAPER, _FAST):
    _table["tms-5-2-id"] = _table["tms-5-2"]
    _table["tms-40-10-id"] = _table["tms-40-10"]
del _table


@saveable()
@dataclass
class SPDConfig:
    """Hyperparameters of :func:`mechnb.spd.decompose`.

    Attributes:
        C: subcomponents per decomposed weight matrix (paper: ``C``).
        steps: optimiser steps of the main phase.
        batch_size: inputs drawn from ``sample_inputs`` per step.
        lr: peak learning rate of AdamW (no weight decay) on the subcomponents and CI functions.
        lr_schedule: ``"cosine"`` - ``lr * cos(pi/2 * t)`` for training fraction ``t``, a
            quarter period from ``lr`` down to 0 as in the authors' code - or ``"constant"``;
            after ``lr_warmup_frac * steps`` linear warm-up steps.
        ci_hidden: hidden width of the causal-importance MLPs (see ``ci_fn``).
        n_mask_samples: stochastic masks drawn per example for each stochastic loss.
        faithfulness: coefficient of ``L_faithfulness`` (paper, method section).
        stochastic_recon: coefficient of ``L_stochastic-recon`` (all layers masked).
        stochastic_recon_layerwise: coefficient of ``L_stochastic-recon-layerwise`` (one layer
            masked at a time).
        importance_minimality: coefficient of ``L_importance-minimality = sum |g|^p``.
        p: the exponent ``p`` of the importance-minimality loss.
        p_anneal_final: if set, ``p`` is annealed linearly to this value between
            ``p_anneal_start_frac`` and ``p_anneal_end_frac`` of the main phase.
        leaky_alpha: slope of the leaky parts of the hard sigmoids (paper: 0.01).
        upper_leaky_alpha: slope above 1 of the upper-leaky sigmoid inside the importance-minimality
            loss, if different from ``leaky_alpha``. It sets how hard a saturated importance
            (pre-activation far above 1) is pulled back towards 1, where reconstruction and
            minimality compete again; with the paper's 0.01 that pull is 100x weaker than the
            one on an unsaturated importance.
        lower_sigmoid: the hard sigmoid of the masks' causal importances: ``"leaky"`` - the
            paper's ``alpha * x`` below 0; ``"leaky_backward"`` - the authors' later version,
            ``clamp(x, 0, 1)`` forward with the leak only in the backward pass and only where the
            gradient asks for a larger importance
            (:func:`mechnb.spd.lower_leaky_backward_hard_sigmoid`), which keeps dead
            pre-activations from drifting without bound in long runs.
        ci_fn: the causal-importance functions: ``"scalar"`` - the paper's one MLP
            ``1 -> ci_hidden -> 1`` per subcomponent on its inner activation; ``"vector"`` - one MLP
            ``d_in -> ci_hidden -> 1`` per subcomponent on the whole layer input; ``"shared"`` - one
            MLP ``d_in -> ci_hidden -> C`` per layer (both from the authors' later code, see
            :mod:`mechnb.spd.components`).
        delta_component: add the residual ``Delta_l = W_l - U_l V_l^T`` to every replaced layer as
            one more subcomponent with causal importance 0 (its stochastic mask is a fresh
            ``r ~ U(0, 1)``), as in the authors' later code. The masked model with every mask 1 is
            then the target exactly, and the reconstruction losses push ``Delta_l a`` to 0 on the
            data: the delta component *replaces* the faithfulness loss, whose value is still
            recorded in the history but no longer enters the total.
        faithfulness_warmup_steps: steps of faithfulness-only optimisation (lr
            ``faithfulness_warmup_lr``) before the main phase; 0 disables it.
        compress_zero_rows: merge all-zero input rows of a batch into one weighted row. The
            causal importances of identical rows are identical, so the importance-minimality
            loss is unchanged, and for bias-free layers (TMS, residual MLP) a zero row's
            reconstruction error is exactly 0 whatever the mask, so the whole loss and gradient
            are those of the full batch. (Otherwise that row's reconstruction loss is an
            unbiased one-mask estimate.)
        output_loss: how the reconstruction losses (and :func:`mechnb.spd.evaluate`) compare the
            target's output with the masked model's: ``"mse"`` - the mean squared error (the paper's
            toy models); ``"kl"`` - for a language model whose output is logits ``(batch, pos,
            d_vocab)``, ``KL(softmax(target) || softmax(masked))`` summed over the vocabulary and
            averaged over tokens, as in the paper's language-model experiments and the authors'
            later code.
        n_eval_batches: batches drawn after training to record each subcomponent's largest
            causal importance (used by :meth:`SPDResult.alive`).
        seed: seeds the parameter init, the input stream and the masks.
        log_every: refresh the progress bar / call ``callback`` every this many steps.
    """

    C: int = 20
    steps: int = 40_000
    batch_size: int = 4096
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    lr_warmup_frac: float = 0.0
    ci_hidden: int = 16
    n_mask_samples: int = 1
    faithfulness: float = 1.0
    stochastic_recon: float = 1.0
    stochastic_recon_layerwise: float = 1.0
    importance_minimality: float = 3e-3
    p: float = 1.0
    p_anneal_final: float | None = None
    p_anneal_start_frac: float = 0.0
    p_anneal_end_frac: float = 1.0
    leaky_alpha: float = 0.01
    upper_leaky_alpha: float | None = None
    lower_sigmoid: str = "leaky"
    ci_fn: str = "scalar"
    delta_component: bool = False
    faithfulness_warmup_steps: int = 0
    faithfulness_warmup_lr: float = 1e-2
    compress_zero_rows: bool = True
    output_loss: str = "mse"
    n_eval_batches: int = 10
    seed: int = 0
    log_every: int = 100

    def __post_init__(self) -> None:
        check_positive_int("C", self.C)
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        check_positive_float("lr", self.lr)
        check_choice("lr_schedule", self.lr_schedule, ["cosine", "constant"])
        check_probability("lr_warmup_frac", self.lr_warmup_frac)
        check_positive_int("ci_hidden", self.ci_hidden)
        check_positive_int("n_mask_samples", self.n_mask_samples)
        for name in ("faithfulness", "stochastic_recon", "stochastic_recon_layerwise", "importance_minimality"):
            check_positive_float(name, getattr(self, name), allow_zero=True)
        check_positive_float("p", self.p)
        if self.p_anneal_final is not None:
            check_positive_float("p_anneal_final", self.p_anneal_final)
        check_probability("p_anneal_start_frac", self.p_anneal_start_frac)
        check_probability("p_anneal_end_frac", self.p_anneal_end_frac)
        if self.p_anneal_end_frac < self.p_anneal_start_frac:
            raise ValueError(
                f"p_anneal_end_frac: expected >= p_anneal_start_frac ({self.p_anneal_start_frac}), "
                f"got {self.p_anneal_end_frac}"
            )
        check_positive_float("leaky_alpha", self.leaky_alpha, allow_zero=True)
        if self.upper_leaky_alpha is not None:
            check_positive_float("upper_leaky_alpha", self.upper_leaky_alpha, allow_zero=True)
        check_choice("lower_sigmoid", self.lower_sigmoid, ["leaky", "leaky_backward"])
        check_choice("ci_fn", self.ci_fn, ["scalar", "vector", "shared"])
        if not isinstance(self.delta_component, bool):
            raise TypeError(f"delta_component: expected a bool, got {type(self.delta_component).__name__}")
        check_positive_int("faithfulness_warmup_steps", self.faithfulness_warmup_steps, minimum=0)
        check_positive_float("faithfulness_warmup_lr", self.faithfulness_warmup_lr)
        if not isinstance(self.compress_zero_rows, bool):
            raise TypeError(f"compress_zero_rows: expected a bool, got {type(self.compress_zero_rows).__name__}")
        check_choice("output_loss", self.output_loss, ["mse", "kl"])
        check_positive_int("n_eval_batches", self.n_eval_batches, minimum=0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed: expected an int, got {type(self.seed).__name__} {self.seed!r}")
        check_positive_int("log_every", self.log_every)

    # ------------------------------------------------------------------------------
    @classmethod
    def for_model(cls, name: str, recipe: str = "paper", **overrides: Any) -> SPDConfig:
        """Settings for a zoo model.

        Args:
            name: ``"tms-5-2"``, ``"tms-40-10"``, ``"tms-5-2-id"``, ``"tms-40-10-id"``,
                ``"resid-mlp-1"`` or ``"tiny-lm-mlp"`` (the MLP weights of the zoo's ``tiny-lm``,
                :func:`mechnb.experiments.spd.tiny_lm_mlp`).
            recipe: ``"paper"`` - the paper's hyperparameters (C, coefficients, p, lr and its
                schedule, batch size, steps); ``"fast"`` - the same losses and coefficients with
                mechnb's short CPU schedule (see the module source for what differs). ``"full"``
                is a synonym of ``"paper"`` (for ``tiny-lm-mlp``, which has no paper setting,
                mechnb's full CPU budget).
            **overrides: any field, e.g. ``steps=500``.
        """
        check_choice("recipe", recipe, ["paper", "full", "fast"])
        table = _FAST if recipe == "fast" else _PAPER
        check_choice("name", name, sorted(table))
        fields = dict(table[name])
        fields.update(overrides)
        return cls(**fields)

    @staticmethod
    def model_names() -> list[str]:
        """Names accepted by :meth:`for_model`."""
        return sorted(_PAPER)

    def replace(self, **changes: Any) -> SPDConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ------------------------------------------------------------------------------
    @property
    def upper_alpha(self) -> float:
        """The slope above 1 of the minimality loss's upper-leaky sigmoid (``upper_leaky_alpha`` or ``leaky_alpha``)."""
        return self.leaky_alpha if self.upper_leaky_alpha is None else self.upper_leaky_alpha

    def p_at(self, step: int) -> float:
        """The importance-minimality exponent at main-phase ``step`` (linear annealing)."""
        if self.p_anneal_final is None:
            return self.p
        frac = step / max(1, self.steps)
        if frac <= self.p_anneal_start_frac:
            return self.p
        if frac >= self.p_anneal_end_frac:
            return self.p_anneal_final
        t = (frac - self.p_anneal_start_frac) / (self.p_anneal_end_frac - self.p_anneal_start_frac)
        return self.p + (self.p_anneal_final - self.p) * t

    def lr_at(self, step: int) -> float:
        """The learning rate at main-phase ``step``: linear warm-up, then quarter-cosine to 0 or constant."""
        warm = int(round(self.lr_warmup_frac * self.steps))
        if step < warm:
            return self.lr * (step + 1) / warm
        if self.lr_schedule == "constant":
            return self.lr
        frac = (step - warm) / max(1, self.steps - warm - 1)
        return self.lr * math.cos(0.5 * math.pi * min(1.0, frac))
