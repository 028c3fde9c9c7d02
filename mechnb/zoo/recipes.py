"""The zoo's recipes as data: one small frozen dataclass per entry, typed fields, no string switches.

A :class:`Recipe` knows how to make its model (:meth:`Recipe.make_model`) and its task
(:meth:`Recipe.make_task`), what its training objective is (:meth:`Recipe.objective`) and which
metrics the manifest records (:meth:`Recipe.evaluate`). The four kinds:

- :class:`TMSRecipe` - a toy model of superposition on sparse features (Elhage et al. 2022);
- :class:`ResidualMLPRecipe` - a residual MLP computing ``x + ReLU(x)`` (compressed computation,
  SPD paper Sec. 4.3);
- :class:`ModularMLPRecipe` - an MLP on ``a (op) b mod P`` from one-hot pairs;
- :class:`LanguageRecipe` - a tiny transformer on :class:`~mechnb.tasks.SyntheticLanguage`.

:data:`RECIPES` maps every entry name to its recipe; the manifest's ``config`` / ``task`` /
``train`` sections are written from :attr:`Recipe.model_kwargs`, :attr:`Recipe.task_kwargs`
and :meth:`Recipe.train_record` (the manifest format is unchanged).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mechnb._torch import eval_mode
from mechnb.metrics import lm_behaviour, lm_loss, modular_accuracy, tms_feature_geometry
from mechnb.models import MLP, TMS, ResidualMLP, TinyTransformer
from mechnb.tasks import ModularArithmetic, SparseFeatures, SyntheticLanguage
from mechnb.train import TrainConfig, cross_entropy_loss

__all__ = ["Recipe", "TMSRecipe", "ResidualMLPRecipe", "ModularMLPRecipe", "LanguageRecipe", "RECIPES",
           "Objective", "names", "get_recipe", "task_for", "evaluate"]

Task = SparseFeatures | ModularArithmetic | SyntheticLanguage
BatchFn = Callable[[int, torch.Generator], Any]
LossFn = Callable[[nn.Module, Any], torch.Tensor]
EvalFn = Callable[[nn.Module], dict[str, float]]

#: seed of the 20 000 held-out sparse-feature inputs of the manifest's ``eval_loss``
_SPARSE_EVAL_SEED = 10_000
_SPARSE_EVAL_N = 20_000


@dataclass(frozen=True)
class Objective:
    """What :func:`mechnb.train.train` needs for one recipe: batches, the loss, the periodic evals."""

    batch_fn: BatchFn
    loss_fn: LossFn
    eval_fn: EvalFn | None = None


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How one zoo entry is built: architecture, task, training config, batch size.

    Subclasses add the typed architecture and task fields. Common fields:

    Attributes:
        name: the entry's name (``zoo.load(name)``).
        description: one sentence shown by ``python -m mechnb.zoo list`` and the manifest.
        train: the :class:`~mechnb.train.TrainConfig` (optimiser, schedule, steps, seed).
        batch_size: examples per step (``0`` means the full training set every step).
    """

    name: str
    description: str
    train: TrainConfig
    batch_size: int

    #: the architecture's class and the manifest's ``arch`` / ``task.kind`` strings
    model_class: ClassVar[type[nn.Module]]
    task_kind: ClassVar[str]

    @property
    def arch(self) -> str:
        """The architecture's class name, as the manifest records it (``"TMS"``, ``"MLP"`` ...)."""
        return self.model_class.__name__

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``model_class`` (without the ones derived from the task)."""
        raise NotImplementedError

    @property
    def task_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the task's constructor."""
        raise NotImplementedError

    @property
    def extra(self) -> dict[str, Any]:
        """Recipe fields beyond the :class:`TrainConfig` that the manifest's ``train`` section records."""
        return {}

    def make_task(self) -> Task:
        """A fresh task object: the data this entry is trained and evaluated on."""
        raise NotImplementedError

    def make_model(self) -> nn.Module:
        """A freshly initialised model (draws its init from torch's global RNG, like ``nn.Linear``)."""
        return self.model_class(**self.model_kwargs)

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        """The manifest's ``config``: the constructor arguments that rebuild ``model``'s architecture."""
        return dict(self.model_kwargs)

    def train_record(self, cfg: TrainConfig) -> dict[str, Any]:
        """The manifest's ``train`` section for a run with ``cfg``."""
        return {**cfg.to_dict(), "batch_size": self.batch_size, **self.extra}

    def check_model(self, model: Any, argname: str = "model") -> nn.Module:
        """Raise ``TypeError`` / ``ValueError`` naming ``argname`` unless ``model`` fits this entry's task."""
        if not isinstance(model, self.model_class):
            raise TypeError(f"{argname}: expected a {self.arch} (the architecture of zoo entry {self.name!r}), "
                            f"got {type(model).__name__}")
        return model

    def objective(self, task: Any, device: torch.device) -> Objective:
        """Batches, loss and periodic evaluation of this entry's training run on ``device``."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """The metrics the manifest records (deterministic held-out data)."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------
# Sparse features: TMS and the residual MLP
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class _SparseRecipe(Recipe):
    """A model trained to map sparse features ``x`` to ``task.label(x)`` with the mean squared error."""

    n_features: int
    feature_probability: float
    value_range: tuple[float, float] = (0.0, 1.0)

    task_kind: ClassVar[str] = "sparse_features"
    target: ClassVar[str] = "identity"

    @property
    def task_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(n_features=self.n_features, feature_probability=self.feature_probability,
                                  value_range=self.value_range)
        if self.target != "identity":
            kw["target"] = self.target
        return kw

    def make_task(self) -> SparseFeatures:
        return SparseFeatures(**self.task_kwargs)

    def check_model(self, model: Any, argname: str = "model") -> nn.Module:
        super().check_model(model, argname)
        if model.n_features != self.n_features:
            raise ValueError(f"{argname}: expected a {self.arch} with n_features={self.n_features} (zoo entry "
                             f"{self.name!r}), got n_features={model.n_features}")
        return model

    def objective(self, task: SparseFeatures, device: torch.device) -> Objective:
        def batch_fn(step: int, g: torch.Generator) -> torch.Tensor:
            return task.sample(self.batch_size, g).to(device)

        def loss_fn(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
            return ((m(x) - task.label(x)) ** 2).mean()

        return Objective(batch_fn, loss_fn)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """``eval_loss``: mean squared error on 20 000 held-out inputs (generator seed 10 000)."""
        task = self.make_task()
        x = task.sample(_SPARSE_EVAL_N, torch.Generator().manual_seed(_SPARSE_EVAL_SEED)).to(_model_device(model))
        with eval_mode(model):
            return {"eval_loss": float(((model(x) - task.label(x)) ** 2).mean())}


@dataclass(frozen=True, kw_only=True)
class TMSRecipe(_SparseRecipe):
    """A toy model of superposition: ``n_features`` sparse features through ``n_hidden`` dimensions."""

    n_hidden: int
    n_hidden_layers: int = 0
    tied_weights: bool = True

    model_class: ClassVar[type[nn.Module]] = TMS

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return dict(n_features=self.n_features, n_hidden=self.n_hidden, n_hidden_layers=self.n_hidden_layers,
                    tied_weights=self.tied_weights)

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """``eval_loss`` plus the feature geometry (:func:`mechnb.metrics.tms_feature_geometry`)."""
        return {**super().evaluate(model), **tms_feature_geometry(model)}  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class ResidualMLPRecipe(_SparseRecipe):
    """A residual MLP that computes ``y = x + ReLU(x)`` for ``n_features`` features with ``d_mlp`` neurons."""

    d_embed: int
    d_mlp: int
    n_layers: int
    embed_seed: int = 0

    model_class: ClassVar[type[nn.Module]] = ResidualMLP
    target: ClassVar[str] = "resid_relu"

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return dict(n_features=self.n_features, d_embed=self.d_embed, d_mlp=self.d_mlp, n_layers=self.n_layers,
                    embed_seed=self.embed_seed)


# --------------------------------------------------------------------------------------
# Modular arithmetic
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ModularMLPRecipe(Recipe):
    """An MLP ``2P -> hidden... -> P`` on ``a (op) b mod P``, trained full-batch on a seeded split.

    Attributes:
        P, op, train_frac, split_seed: the :class:`~mechnb.tasks.ModularArithmetic` task
            (``split_seed`` is its ``seed``).
        hidden: the hidden layer widths.
        activation, bias: the :class:`~mechnb.models.MLP`'s.
        identity_init: set the square hidden layers to the identity before training
            (:meth:`~mechnb.models.MLP.identity_init_`).
    """

    P: int
    hidden: tuple[int, ...]
    op: str = "add"
    train_frac: float = 0.8
    split_seed: int = 0
    activation: str = "relu"
    bias: bool = True
    identity_init: bool = False

    model_class: ClassVar[type[nn.Module]] = MLP
    task_kind: ClassVar[str] = "modular_arithmetic"

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return dict(sizes=[2 * self.P, *self.hidden, self.P], activation=self.activation, bias=self.bias)

    @property
    def task_kwargs(self) -> dict[str, Any]:
        return dict(P=self.P, op=self.op, train_frac=self.train_frac, seed=self.split_seed)

    @property
    def extra(self) -> dict[str, Any]:
        return {"init": "identity"} if self.identity_init else {}

    def make_task(self) -> ModularArithmetic:
        return ModularArithmetic(**self.task_kwargs)

    def make_model(self) -> nn.Module:
        model = MLP(**self.model_kwargs)
        if self.identity_init:
            model.identity_init_()
        return model

    def check_model(self, model: Any, argname: str = "model") -> nn.Module:
        super().check_model(model, argname)
        if model.sizes[0] != 2 * self.P or model.sizes[-1] != self.P:
            raise ValueError(f"{argname}: expected an MLP from {2 * self.P} one-hot inputs to {self.P} logits "
                             f"(zoo entry {self.name!r}, P={self.P}), got sizes {model.sizes}")
        return model

    def objective(self, task: ModularArithmetic, device: torch.device) -> Objective:
        tr, te = task.split()
        tr_x, tr_y, te_x, te_y = tr.x.to(device), tr.y.to(device), te.x.to(device), te.y.to(device)

        def batch_fn(step: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            return tr_x, tr_y  # full batch

        def loss_fn(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            return cross_entropy_loss(m(b[0]), b[1])

        def eval_fn(m: nn.Module) -> dict[str, float]:
            return {"train_acc": modular_accuracy(m, tr_x, tr_y), "test_acc": modular_accuracy(m, te_x, te_y)}

        return Objective(batch_fn, loss_fn, eval_fn)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """``train_acc``, ``test_acc`` (:func:`mechnb.metrics.modular_accuracy`) and ``test_loss``."""
        task = self.make_task()
        _, te = task.split()
        dev = _model_device(model)
        with eval_mode(model):
            test_loss = float(F.cross_entropy(model(te.x.to(dev)), te.y.to(dev)))
        return {"train_acc": modular_accuracy(model, task, split="train"),
                "test_acc": modular_accuracy(model, task, split="test"), "test_loss": test_loss}


# --------------------------------------------------------------------------------------
# Synthetic language
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LanguageRecipe(Recipe):
    """A :class:`~mechnb.models.TinyTransformer` on a fixed corpus of :class:`~mechnb.tasks.SyntheticLanguage`.

    Attributes:
        d_model, n_layers, n_heads, d_mlp, init_seed: the transformer (its ``vocab_size`` is the
            language's).
        n_ctx: the context length of both the model and the language.
        occupation_bias, p_attractor, p_agreement: the language's grammar.
        corpus_sentences, corpus_seed: the training corpus (batches are drawn from it).
        heldout_seed: seed of the 2000 held-out sentences of the manifest's ``heldout_loss``.
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int
    n_ctx: int = 16
    init_seed: int = 0
    occupation_bias: float = 0.85
    p_attractor: float = 0.6
    p_agreement: float = 0.5
    corpus_sentences: int = 200_000
    corpus_seed: int = 0
    heldout_seed: int = 10_000

    model_class: ClassVar[type[nn.Module]] = TinyTransformer
    task_kind: ClassVar[str] = "synthetic_language"

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return dict(d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads, d_mlp=self.d_mlp,
                    n_ctx=self.n_ctx, init_seed=self.init_seed)

    @property
    def task_kwargs(self) -> dict[str, Any]:
        return dict(occupation_bias=self.occupation_bias, p_attractor=self.p_attractor,
                    p_agreement=self.p_agreement, n_ctx=self.n_ctx)

    @property
    def extra(self) -> dict[str, Any]:
        return {"corpus_sentences": self.corpus_sentences, "corpus_seed": self.corpus_seed,
                "heldout_seed": self.heldout_seed}

    def make_task(self) -> SyntheticLanguage:
        return SyntheticLanguage(**self.task_kwargs)

    def make_model(self) -> nn.Module:
        return TinyTransformer(vocab_size=self.make_task().vocab_size, **self.model_kwargs)

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return {**self.model_kwargs, "vocab_size": model.vocab_size}  # type: ignore[dict-item]

    def check_model(self, model: Any, argname: str = "model") -> nn.Module:
        super().check_model(model, argname)
        vocab = self.make_task().vocab_size
        if model.vocab_size != vocab or model.n_ctx < self.n_ctx:
            raise ValueError(f"{argname}: expected a TinyTransformer with vocab_size={vocab} and n_ctx >= {self.n_ctx} "
                             f"(zoo entry {self.name!r}), got vocab_size={model.vocab_size}, n_ctx={model.n_ctx}")
        return model

    def objective(self, task: SyntheticLanguage, device: torch.device) -> Objective:
        corpus = task.sample_batch(self.corpus_sentences, seed=self.corpus_seed).to(device)
        pad = task.tokenizer.pad_id

        def batch_fn(step: int, g: torch.Generator) -> torch.Tensor:
            return corpus[torch.randint(0, corpus.shape[0], (self.batch_size,), generator=g).to(device)]

        def loss_fn(m: nn.Module, toks: torch.Tensor) -> torch.Tensor:
            return lm_loss(m, toks, pad)  # type: ignore[arg-type]

        def eval_fn(m: nn.Module) -> dict[str, float]:
            return lm_behaviour(m, task, n=200)  # type: ignore[arg-type]

        return Objective(batch_fn, loss_fn, eval_fn)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """``heldout_loss`` on 2000 held-out sentences plus :func:`mechnb.metrics.lm_behaviour`."""
        task = self.make_task()
        held = task.sample_batch(2000, seed=self.heldout_seed).to(_model_device(model))
        with eval_mode(model):
            loss = float(lm_loss(model, held, task.tokenizer.pad_id))  # type: ignore[arg-type]
            return {"heldout_loss": loss, **lm_behaviour(model, task)}  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# The entries
# --------------------------------------------------------------------------------------
_MODADD_P = 23


def _residual_mlp(name: str, n_features: int, d_mlp: int, n_layers: int, steps: int, description: str,
                  log_every: int = 100) -> ResidualMLPRecipe:
    """The SPD paper's residual MLPs (1000-d residual stream, p = 0.01, values U[-1, 1]), trained as the authors do."""
    return ResidualMLPRecipe(
        name=name, n_features=n_features, d_embed=1000, d_mlp=d_mlp, n_layers=n_layers, embed_seed=0,
        feature_probability=0.01, value_range=(-1.0, 1.0),
        train=TrainConfig(steps=steps, lr=3e-3, weight_decay=0.01, schedule="cosine", seed=0, log_every=log_every),
        batch_size=2048, description=description,
    )

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        TMSRecipe(
            name="tms-5-2", n_features=5, n_hidden=2, feature_probability=0.05, value_range=(0.0, 1.0),
            train=TrainConfig(steps=3000, lr=1e-2, schedule="cosine", seed=0, log_every=100), batch_size=1024,
            description="Toy model of superposition: 5 sparse features in 2 dimensions (a regular pentagon).",
        ),
        TMSRecipe(
            name="tms-40-10", n_features=40, n_hidden=10, feature_probability=0.05, value_range=(0.0, 1.0),
            train=TrainConfig(steps=5000, lr=1e-2, schedule="cosine", seed=0, log_every=250), batch_size=1024,
            description="Toy model of superposition: 40 sparse features in 10 dimensions.",
        ),
        _residual_mlp("resid-mlp-1", 100, 50, 1, steps=1000,
                      description="Residual MLP computing y = x + ReLU(x) for 100 features with 50 neurons "
                                  "(compressed computation)."),
        _residual_mlp("resid-mlp-2", 100, 25, 2, steps=1000,
                      description="Residual MLP computing y = x + ReLU(x) for 100 features with 2 x 25 neurons "
                                  "(distributed representations: each ReLU spread over two layers)."),
        _residual_mlp("resid-mlp-3", 102, 17, 3, steps=10_000, log_every=500,
                      description="Residual MLP computing y = x + ReLU(x) for 102 features with 3 x 17 neurons "
                                  "(distributed representations over three layers)."),
        ModularMLPRecipe(
            name="modadd-mlp", P=_MODADD_P, hidden=(256,) * 6, op="add", train_frac=0.9, split_seed=0,
            activation="relu", bias=True, identity_init=True,
            train=TrainConfig(steps=12000, lr=3e-3, weight_decay=1.0, betas=(0.9, 0.98), warmup_steps=100,
                              schedule="wsd", grad_clip=1.0, seed=0, log_every=250), batch_size=0,
            description="Deep MLP (6 hidden layers of 256 ReLUs, identity-initialised) on a + b mod 23 from one-hot "
                        "inputs, trained on 90% of the pairs with weight decay (it groks).",
        ),
        LanguageRecipe(
            name="tiny-lm", d_model=64, n_layers=2, n_heads=4, d_mlp=256, n_ctx=16, init_seed=0,
            occupation_bias=0.85, p_attractor=0.6, p_agreement=0.5,
            corpus_sentences=200_000, corpus_seed=0, heldout_seed=10_000,
            train=TrainConfig(steps=4000, lr=2e-3, weight_decay=0.01, warmup_steps=200, schedule="cosine", seed=0,
                              log_every=250, grad_clip=1.0), batch_size=128,
            description="2-layer transformer on a synthetic English-like language with agreement and a planted "
                        "occupation bias.",
        ),
    ]
}


def names() -> list[str]:
    """Names of the zoo entries, sorted."""
    return sorted(RECIPES)


def get_recipe(name: Any, argname: str = "name") -> Recipe:
    """The :class:`Recipe` of entry ``name`` (``TypeError`` for a non-string, ``KeyError`` listing the valid names)."""
    if not isinstance(name, str):
        raise TypeError(f"{argname}: expected a zoo entry name (str), got {type(name).__name__}")
    if name not in RECIPES:
        raise KeyError(f"unknown zoo model {name!r}; valid names: {', '.join(names())}")
    return RECIPES[name]


def task_for(name: str) -> SparseFeatures | ModularArithmetic | SyntheticLanguage:
    """The task object zoo entry ``name`` was trained on (``SparseFeatures``, ``ModularArithmetic`` or
    ``SyntheticLanguage``)."""
    return get_recipe(name).make_task()


def evaluate(name: str, model: nn.Module) -> dict[str, Any]:
    """The metrics recorded in the manifest for ``name``, measured on ``model`` (deterministic held-out data).

    ``model`` must be of the entry's architecture with its input/output sizes (``TypeError`` /
    ``ValueError`` naming ``model`` otherwise); its mode is restored and no gradients are recorded.
    """
    recipe = get_recipe(name)
    recipe.check_model(model, "model")
    return recipe.evaluate(model)
