"""Circuit-tuning (Li, Yuan & Wang 2025, arXiv:2502.06106, Alg. 1) and its baselines.

Circuit-tuning alternates two stages: (1) *circuit discovery* - attribute the task metric to
the edges of the computational graph (EAP / EAP-IG) and keep the top ``n`` edges; (2)
*circuit tuning* - update only the parameters owned by the circuit's nodes. The circuit is
re-discovered every ``discover_every`` steps, so it can move as the model learns.

Parameters outside the current circuit are held **bit-for-bit** fixed at every step whatever
the optimiser: gradients outside are zeroed before the step, the optimiser's step is applied,
then every entry outside the circuit is restored to its pre-step value (momentum and weight
decay would otherwise move zero-gradient parameters), and the optimiser state of those entries
(momentum buffers, Adam moments and Adam's step count, kept per entry by :class:`EntryAdam`) is
reset to 0 so that an entry joining a later circuit starts like a fresh one.

Options from the authors' code (:class:`TuneConfig`): discovery on every step's training batch,
a schedule for the circuit size, exponentially smoothed edge scores across re-discoveries, and
the random-parameter baseline (:class:`RandomSelectionTuning`: random node-owned blocks with the
circuit's trainable count).

Baselines (:func:`finetune`): full fine-tuning, fine-tuning of every node parameter
(``mode="nodes"``, what circuit-tuning becomes with a circuit of every edge), and LoRA (Hu et al.
2021, arXiv:2106.09685) on every attention and MLP weight matrix.

:func:`node_redundancy` sweeps the circuit size: like the intrinsic dimension of Li et al.
2018, a task needs only a few nodes; past that size the tuned metric saturates (paper Sec. 3).

Modules: :mod:`.masks` (which parameter entries a circuit owns), :mod:`.config`
(:class:`TuneConfig`, :class:`TuneResult`), :mod:`.strategies` (stage 1 :func:`discover` and one
strategy object per method: :class:`CircuitTuning`, :class:`RandomSelectionTuning`,
:class:`FullTuning`, :class:`NodeTuning`, :class:`LoRATuning`), :mod:`.optim` (:class:`EntryAdam`),
:mod:`.loop` (the shared loop :func:`run_strategy`, :func:`circuit_tune`,
:func:`finetune`), :mod:`.lora` (:class:`LoRA`) and :mod:`.analysis` (node redundancy, circuit
history, comparison table).
"""

from mechnb.circuits.tuning.analysis import (
    CircuitHistory,
    NodeRedundancy,
    circuit_history,
    comparison_table,
    node_redundancy,
)
from mechnb.circuits.tuning.config import TuneConfig, TuneResult
from mechnb.circuits.tuning.lora import LoRA
from mechnb.circuits.tuning.loop import circuit_tune, finetune, run_strategy
from mechnb.circuits.tuning.masks import (
    node_parameter_mask,
    ownership_blocks,
    parameter_mask,
    random_blocks_mask,
    trainable_fraction,
)
from mechnb.circuits.tuning.optim import EntryAdam
from mechnb.circuits.tuning.strategies import (
    CircuitTuning,
    FullTuning,
    LoRATuning,
    NodeTuning,
    RandomSelectionTuning,
    TuningStrategy,
    discover,
    discover_on_batch,
)

__all__ = [
    "parameter_mask", "node_parameter_mask", "trainable_fraction", "ownership_blocks", "random_blocks_mask",
    "TuneConfig", "TuneResult", "EntryAdam",
    "discover", "discover_on_batch", "TuningStrategy", "CircuitTuning", "RandomSelectionTuning", "FullTuning",
    "NodeTuning", "LoRATuning",
    "run_strategy", "circuit_tune", "finetune", "LoRA",
    "NodeRedundancy", "node_redundancy", "CircuitHistory", "circuit_history", "comparison_table",
]
