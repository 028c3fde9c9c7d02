"""Circuit discovery (EAP, EAP-IG, exact patching) and circuit-tuning (Li, Yuan & Wang 2025).

Paper: *Circuit-tuning: A Mechanistic Approach for Identifying Parameter Redundancy and
Fine-tuning Neural Networks*, arXiv:2502.06106. Edge scores: EAP (Syed et al. 2023,
arXiv:2310.10348) and EAP-IG (Hanna et al. 2024, arXiv:2403.17806).

Circuit discovery is evaluated the way the field now does: under four ablations (Miller et al.
2024), by faithfulness curves and their area (the MIB benchmark's circuit track, Mueller et al.
2025) and by ROC against known circuits (:func:`roc_against`; a planted one is in
:mod:`mechnb.experiments.circuits`); ACDC (Conmy et al. 2023) is the greedy-pruning baseline.

Submodules: :mod:`.graph` (nodes, edges, edge patching), :mod:`.ablation` (the reference a patched
edge carries: corrupted, zero, mean, mean-positional), :mod:`.metric` (the metric and prompts),
:mod:`.circuit` (:class:`Circuit`, :class:`EdgeScores`), :mod:`.attribution` (EAP, EAP-IG, exact),
:mod:`.exact` (exact patching batched over edges), :mod:`.acdc`, :mod:`.faithfulness` (faithfulness,
curves and their area), :mod:`.evaluation` (rank agreement, ROC), :mod:`.tuning_tasks` (the tuning tasks on
:class:`~mechnb.tasks.SyntheticLanguage`) and the package :mod:`.tuning`: ``masks`` (which
parameters a circuit owns), ``config`` (:class:`TuneConfig`, :class:`TuneResult`),
``strategies`` (one object per method: :class:`CircuitTuning`, :class:`FullTuning`,
:class:`NodeTuning`, :class:`LoRATuning`), ``loop`` (:func:`run_strategy`, :func:`circuit_tune`,
:func:`finetune`), ``lora`` (:class:`LoRA`) and ``analysis`` (node redundancy, circuit history).
"""

from mechnb.circuits.ablation import ABLATIONS, ablation_reference
from mechnb.circuits.acdc import ACDCResult, acdc
from mechnb.circuits.attribution import METHODS, Metric, attribute, logit_diff
from mechnb.circuits.circuit import Circuit, EdgeScores
from mechnb.circuits.evaluation import ROCCurve, rank_agreement, roc_against
from mechnb.circuits.faithfulness import FaithfulnessCurve, area_table, faithfulness, faithfulness_curve
from mechnb.circuits.graph import Edge, Graph, WriterCache, cache_writers, patched_forward, reader_gradients
from mechnb.circuits.tuning_tasks import (
    TrainBatch,
    TuneTask,
    debias_task,
    disagreement_task,
    flip_verb,
    heldout_losses,
    prejudice_risk,
    weighted_lm_loss,
)
from mechnb.circuits.tuning import (
    CircuitHistory,
    CircuitTuning,
    EntryAdam,
    FullTuning,
    LoRA,
    LoRATuning,
    NodeRedundancy,
    NodeTuning,
    RandomSelectionTuning,
    TuneConfig,
    TuneResult,
    TuningStrategy,
    circuit_history,
    circuit_tune,
    comparison_table,
    discover,
    discover_on_batch,
    finetune,
    node_parameter_mask,
    node_redundancy,
    ownership_blocks,
    parameter_mask,
    random_blocks_mask,
    run_strategy,
    trainable_fraction,
)

__all__ = [
    "Edge", "Graph", "WriterCache", "cache_writers", "patched_forward", "reader_gradients",
    "Metric", "logit_diff", "EdgeScores", "Circuit", "attribute", "METHODS", "faithfulness", "faithfulness_curve",
    "FaithfulnessCurve", "area_table", "rank_agreement", "ROCCurve", "roc_against", "ABLATIONS", "ablation_reference",
    "ACDCResult", "acdc",
    "TrainBatch", "TuneTask", "weighted_lm_loss", "heldout_losses", "prejudice_risk", "disagreement_task",
    "debias_task", "flip_verb",
    "parameter_mask", "node_parameter_mask", "trainable_fraction", "TuneConfig", "TuneResult", "discover",
    "circuit_tune", "finetune", "LoRA", "NodeRedundancy", "node_redundancy",
    "TuningStrategy", "CircuitTuning", "RandomSelectionTuning", "FullTuning", "NodeTuning", "LoRATuning",
    "run_strategy", "EntryAdam", "discover_on_batch", "ownership_blocks", "random_blocks_mask",
    "CircuitHistory", "circuit_history", "comparison_table",
]
