"""Degeneracy in the loss landscape, the local learning coefficient and the Interaction Basis.

Papers: Bushnaq et al. 2024, *Using Degeneracy in the Loss Landscape for Mechanistic
Interpretability* (https://arxiv.org/abs/2405.10927) and *The Local Interaction Basis*
(https://arxiv.org/abs/2405.10928); Lau et al. 2023, *The Local Learning Coefficient*
(https://arxiv.org/abs/2308.12108); Aoyagi 2024 (deep linear networks); Sagun et al. 2017
(Hessian spectra, https://arxiv.org/abs/1706.04454).

Layer indices for :class:`mechnb.models.MLP` (everywhere in this package): ``0`` is the input,
``l`` (``1 <= l < L``) the post-activation output of ``model.layers[l-1]``, ``L = len(model.layers)``
the model output; ``model.layers[l]`` maps layer ``l`` to layer ``l + 1``.

Submodules: :mod:`.measures` (Gram / Jacobian nullity, synchronised ReLUs, effective parameter
count, the degeneracy report), :mod:`.hessian`, :mod:`.llc` (with its
batched chains and samplers - SGLD, SGNHT - in :mod:`.samplers`), :mod:`.calibration` (sampler
settings grid), :mod:`.trajectory` (the LLC over training checkpoints), :mod:`.dynamics` (essential
dynamics), :mod:`.interaction`. Networks with
planted degeneracies (``planted_mlp``, ``planted_dln``) are experiments, in
:mod:`mechnb.experiments.degeneracy`.
"""

from mechnb.degeneracy.hessian import hessian_nullity, hessian_spectrum
from mechnb.degeneracy.interaction import (
    AblationCurves,
    InteractionBasis,
    InteractionEdges,
    Modules,
    ablation_curves,
    find_modules,
    interaction_basis,
    interaction_edges,
)
from mechnb.degeneracy.calibration import LLCCalibration, calibrate_llc
from mechnb.degeneracy.dynamics import EssentialDynamics, essential_dynamics, turning_points
from mechnb.degeneracy.llc import (
    LLCResult,
    default_nbeta,
    dln_learning_coefficient,
    estimate_llc,
    sse_loss,
)
from mechnb.degeneracy.trajectory import LLCTrajectory, llc_trajectory
from mechnb.degeneracy.measures import (
    DegeneracyReport,
    EffectiveParameterCount,
    LayerDegeneracy,
    degeneracy_report,
    effective_parameter_count,
    gram_spectrum,
    jacobian_gram,
    relu_synchrony,
    spectrum_decision,
    spectrum_nullity,
)

__all__ = [
    "gram_spectrum",
    "spectrum_nullity",
    "spectrum_decision",
    "jacobian_gram",
    "relu_synchrony",
    "effective_parameter_count",
    "EffectiveParameterCount",
    "degeneracy_report",
    "DegeneracyReport",
    "LayerDegeneracy",
    "hessian_spectrum",
    "hessian_nullity",
    "estimate_llc",
    "LLCResult",
    "default_nbeta",
    "dln_learning_coefficient",
    "sse_loss",
    "calibrate_llc",
    "LLCCalibration",
    "llc_trajectory",
    "LLCTrajectory",
    "essential_dynamics",
    "EssentialDynamics",
    "turning_points",
    "interaction_basis",
    "InteractionBasis",
    "interaction_edges",
    "InteractionEdges",
    "find_modules",
    "ablation_curves",
    "AblationCurves",
    "Modules",
]
