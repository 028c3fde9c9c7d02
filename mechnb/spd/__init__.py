"""Stochastic Parameter Decomposition (Bushnaq, Braun & Sharkey 2025, https://arxiv.org/abs/2506.20790).

Decomposes the weights of chosen linear layers into rank-one *subcomponents*
``W_l ~= sum_c U_l[:, c] V_l[:, c]^T``, each with a learned *causal importance* ``g_{l,c}(x)``
that says how much it may be ablated on input ``x`` without changing the output.

Public API::

    cfg = SPDConfig.for_model("tms-5-2")                  # the paper's settings
    res = decompose(model, ["linear1", "linear2"], sample_inputs, cfg)
    res.U["linear1"], res.V["linear1"]                    # (d_out, C), (d_in, C)
    res.causal_importances(x), res.masked_forward(x, masks), res.history, res.alive()
    mmcs_ml2r(res, "linear1", model.linear1.weight)       # the paper's TMS metrics
    evaluate(res, x)                                      # stochastic / rounded / adversarial recon, L0

Language models: the MLP weight matrices of a :class:`mechnb.models.TinyTransformer` (or any
:func:`mechnb.interop.from_hf` model) are targets by parameter name, e.g.
``decompose(model, ["blocks.0.mlp.W_in", "blocks.0.mlp.W_out"], sample_tokens, cfg)``
(:class:`~mechnb.spd.hooks.MLPWeight`; SPD's ``W`` is the transpose of the stored ``[d_in, d_out]``
parameter, so ``U (d_out, C)``, ``V (d_in, C)`` and ``W_in ~= V U^T``), with causal importances per
token (``res.causal_importances(tokens)[layer]`` is ``(batch, pos, C)``) and, with
``SPDConfig(output_loss="kl")``, reconstruction by the per-token KL of the next-token distributions.
``SPDConfig.for_model("tiny-lm-mlp", recipe="fast" | "full")`` is the zoo's ``tiny-lm`` recipe.

Recipe switches from the authors' later code (:class:`SPDConfig`): ``delta_component`` (the
residual ``W - U V^T`` as a subcomponent of importance 0, replacing faithfulness),
``lower_sigmoid="leaky_backward"`` and ``ci_fn="vector"`` / ``"shared"``.

Modules: :mod:`.config` (settings), :mod:`.components` (subcomponents, CI MLPs, hard
sigmoids), :mod:`.losses` (the four losses, pure functions), :mod:`.hooks` (reading and
rewiring the target), :mod:`.decompose` (step function, training loop, result),
:mod:`.analysis` (metrics, the alive decision), :mod:`.evaluation` (stochastic, rounded and
adversarial reconstruction, L0).
Sweeps over the coefficients (notebook 02) are experiments: :mod:`mechnb.experiments.spd`.
"""

from mechnb.spd.analysis import (
    AliveDecision,
    alive_decisions,
    feature_matches,
    identity_ci_error,
    dense_ci_error,
    keep_only_output,
    match_columns,
    mmcs_ml2r,
    one_hot_causal_importances,
    summarize,
)
from mechnb.spd.components import (
    CausalImportanceMLPs,
    SharedCIMLPs,
    SPDComponents,
    VectorCIMLPs,
    lower_leaky_backward_hard_sigmoid,
    lower_leaky_hard_sigmoid,
    upper_leaky_hard_sigmoid,
)
from mechnb.spd.config import SPDConfig
from mechnb.spd.decompose import (
    LOSS_NAMES,
    SPDResult,
    compress_zero_rows,
    decompose,
    faithfulness_loss,
    importance_minimality_loss,
    stochastic_masks,
)
from mechnb.spd.evaluation import SPDEvaluation, adversarial_masks, evaluate
from mechnb.spd.hooks import MLPWeight, decomposable_names

__all__ = [
    "SPDConfig",
    "decompose",
    "SPDResult",
    "mmcs_ml2r",
    "alive_decisions",
    "AliveDecision",
    "feature_matches",
    "one_hot_causal_importances",
    "match_columns",
    "identity_ci_error",
    "dense_ci_error",
    "keep_only_output",
    "summarize",
    "SPDComponents",
    "CausalImportanceMLPs",
    "VectorCIMLPs",
    "SharedCIMLPs",
    "lower_leaky_hard_sigmoid",
    "lower_leaky_backward_hard_sigmoid",
    "upper_leaky_hard_sigmoid",
    "faithfulness_loss",
    "importance_minimality_loss",
    "stochastic_masks",
    "compress_zero_rows",
    "LOSS_NAMES",
    "evaluate",
    "SPDEvaluation",
    "adversarial_masks",
    "MLPWeight",
    "decomposable_names",
]
