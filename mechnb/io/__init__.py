"""Results to and from disk: tensors in safetensors, everything else in verified JSON, no pickle.

>>> from mechnb import io
>>> io.save(scores, "runs/agreement_eap")          # runs/agreement_eap.json + .<hash>.safetensors
>>> scores = io.load("runs/agreement_eap", expected_type=circuits.EdgeScores)

Saveable types (each registered by its method package with :func:`saveable`):
``EdgeScores``, ``Circuit``, ``Graph``, ``TuneResult`` (:mod:`mechnb.circuits`), ``LayerMatrix``
(:mod:`mechnb.gw`), ``SPDResult`` with its ``SPDComponents`` (subcomponents and the CI MLPs'
parameters plus their construction arguments) and ``SPDConfig`` (:mod:`mechnb.spd`),
``LLCResult``, ``DegeneracyReport`` (with ``LayerDegeneracy``, ``EffectiveParameterCount``) and
``InteractionBasis`` (:mod:`mechnb.degeneracy`), and ``RankDecision``. Models inside a result
(``SPDResult.model``, ``TuneResult.model``) are stored as architecture + constructor arguments +
``state_dict`` (:mod:`.modules`).

Rooms: :mod:`.registry` (:func:`saveable`, the registry and the one dynamic import),
:mod:`.codec` (a result as a JSON tree plus named tensors, and back), :mod:`.modules` (mechnb's
model architectures) and :mod:`.files` (the two files, the atomic write, the checks on load,
:class:`ResultFileError`). This package sits below the method packages: they import it to
register their types; it never imports them by name - :func:`load` imports the package a file
names (always under ``mechnb.``) when its type is not registered yet.
"""

from mechnb.io.files import FORMAT, SCHEMA_VERSION, ResultFileError, load, read_metadata, result_paths, save
from mechnb.io.registry import SaveableType, UnknownTypeError, register, saveable, saveable_types

__all__ = ["save", "load", "read_metadata", "result_paths", "ResultFileError", "saveable", "register",
           "saveable_types", "SaveableType", "UnknownTypeError", "FORMAT", "SCHEMA_VERSION"]
