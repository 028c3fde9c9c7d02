"""Circuit discovery (EAP, EAP-IG, exact patching) and circuit-tuning (Li, Yuan & Wang 2025).

Paper: *Circuit-tuning: A Mechanistic Approach for Identifying Parameter Redundancy and
Fine-tuning Neural Networks*, arXiv:2502.06106. Edge scores: EAP (Syed et al. 2023,
arXiv:2310.10348) and EAP-IG (Hanna et al. 2024, arXiv:2403.17806).

Submodules: :mod:`.graph` (nodes, edges, edge patching), :mod:`.attribution` (scores,
circuits, faithfulness), :mod:`.tuning_tasks` (the tuning tasks on
:class:`~mechnb.tasks.SyntheticLanguage`) and the package :mod:`.tuning`: ``masks`` (which
parameters a circuit owns), ``config`` (:class:`TuneConfig`, :class:`TuneResult`),
``strategies`` (one object per method: :class:`CircuitTuning`, :class:`FullTuning`,
:class:`NodeTuning`, :class:`LoRATuning`), ``loop`` (:func:`run_strategy`, :func:`circuit_tune`,
:func:`finetune`), ``lora`` (:class:`LoRA`) and ``analysis`` (node redundancy, circuit history).
"""

from mechnb.circuits.attribution import (
    Circuit,
    EdgeScores,
    FaithfulnessCurve,
    Metric,
    attribute,
    faithfulness,
    faithfulness_curve,
    logit_diff,
    rank_agreement,
)
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
    FullTuning,
    LoRA,
    LoRATuning,
    NodeRedundancy,
    NodeTuning,
    TuneConfig,
    TuneResult,
    TuningStrategy,
    circuit_history,
    circuit_tune,
    comparison_table,
    discover,
    finetune,
    node_parameter_mask,
    node_redundancy,
    parameter_mask,
    run_strategy,
    trainable_fraction,
)

__all__ = [
    "Edge", "Graph", "WriterCache", "cache_writers", "patched_forward", "reader_gradients",
    "Metric", "logit_diff", "EdgeScores", "Circuit", "attribute", "faithfulness", "faithfulness_curve",
    "FaithfulnessCurve", "rank_agreement",
    "TrainBatch", "TuneTask", "weighted_lm_loss", "heldout_losses", "prejudice_risk", "disagreement_task",
    "debias_task", "flip_verb",
    "parameter_mask", "node_parameter_mask", "trainable_fraction", "TuneConfig", "TuneResult", "discover",
    "circuit_tune", "finetune", "LoRA", "NodeRedundancy", "node_redundancy",
    "TuningStrategy", "CircuitTuning", "FullTuning", "NodeTuning", "LoRATuning", "run_strategy",
    "CircuitHistory", "circuit_history", "comparison_table",
]
