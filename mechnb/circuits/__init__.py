"""Circuit discovery (EAP, EAP-IG, exact patching) and circuit-tuning (Li, Yuan & Wang 2025).

Paper: *Circuit-tuning: A Mechanistic Approach for Identifying Parameter Redundancy and
Fine-tuning Neural Networks*, arXiv:2502.06106. Edge scores: EAP (Syed et al. 2023,
arXiv:2310.10348) and EAP-IG (Hanna et al. 2024, arXiv:2403.17806).

Submodules: :mod:`.graph` (nodes, edges, edge patching), :mod:`.attribution` (scores,
circuits, faithfulness), :mod:`.tuning` (parameter masks, circuit-tuning, baselines, node
redundancy), :mod:`.tasks` (the tuning tasks on :class:`~mechnb.tasks.SyntheticLanguage`).
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
from mechnb.circuits.tasks import (
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
    circuit_history,
    comparison_table,
    LoRA,
    NodeRedundancy,
    TuneConfig,
    TuneResult,
    circuit_tune,
    discover,
    finetune,
    node_parameter_mask,
    node_redundancy,
    parameter_mask,
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
    "CircuitHistory", "circuit_history", "comparison_table",
]
