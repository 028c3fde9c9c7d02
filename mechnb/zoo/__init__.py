"""The model zoo: small models trained by mechnb itself, shipped as checkpoints in ``data/``.

>>> from mechnb import zoo
>>> zoo.names()
['modadd-mlp', 'resid-mlp-1', 'resid-mlp-2', 'resid-mlp-3', 'tiny-lm', 'tms-40-10', 'tms-5-2']
>>> model, info = zoo.load("tms-5-2")          # verified against data/manifest.json
>>> task = zoo.task_for("tms-5-2")             # the data the model was trained on

Three rooms:

- :mod:`mechnb.zoo.recipes` - every entry as a frozen :class:`Recipe` dataclass with typed
  fields that makes its model, its task, its training objective and its manifest metrics
  (:data:`RECIPES`, :func:`names`, :func:`task_for`, :func:`evaluate`);
- :mod:`mechnb.zoo.builder` - training an entry and writing it (:func:`train_entry`,
  :func:`build`; ``python -m mechnb.zoo build [NAME ...]``);
- :mod:`mechnb.zoo.store` - the manifest, sha256 verification and :func:`load`
  (``torch.load(..., weights_only=True)``, so no arbitrary object is ever unpickled), and the
  transaction that replaces a checkpoint and the manifest together: an interrupted build
  leaves both old or both new.

The behaviour measures (``lm_loss``, ``lm_behaviour``, ``occupation_pronoun_probs``,
``tms_feature_geometry``) live in :mod:`mechnb.metrics` and are re-exported here.
"""

from __future__ import annotations

from mechnb.metrics import lm_behaviour, lm_loss, occupation_pronoun_probs, tms_feature_geometry
from mechnb.zoo.builder import build, main, train_entry
from mechnb.zoo.recipes import (
    RECIPES,
    LanguageRecipe,
    ModularMLPRecipe,
    Recipe,
    ResidualMLPRecipe,
    TMSRecipe,
    evaluate,
    names,
    task_for,
)
from mechnb.zoo.store import (
    MANIFEST,
    CheckpointError,
    ChecksumError,
    ManifestError,
    ZooError,
    _sha256,
    data_dir,
    info,
    load,
    manifest,
)

__all__ = ["names", "load", "task_for", "build", "info", "manifest", "data_dir", "ChecksumError", "RECIPES",
           "evaluate", "tms_feature_geometry", "lm_behaviour", "occupation_pronoun_probs", "lm_loss",
           "train_entry", "Recipe", "TMSRecipe", "ResidualMLPRecipe", "ModularMLPRecipe", "LanguageRecipe",
           "ZooError", "ManifestError", "CheckpointError", "MANIFEST"]
