"""The circuit explorer of notebook 04: circuit size, attribution method and task -> circuit + faithfulness."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
from IPython.display import display
from matplotlib.figure import Figure

from mechnb._checks import check_choice, check_positive_int
from mechnb.circuits import (
    ABLATIONS,
    EdgeScores,
    FaithfulnessCurve,
    Graph,
    Metric,
    attribute,
    faithfulness,
    faithfulness_curve,
    logit_diff,
)
from mechnb.models import TinyTransformer
from mechnb.plots import circuits as cplots
from mechnb.tasks import PromptPairs
from mechnb.widgets._common import show_figure

__all__ = ["CircuitExplorer"]

_METHOD_LABELS = {"eap": "EAP", "eap-ig": "EAP-IG", "exact": "exact patching"}


class CircuitExplorer:
    """Slider for the circuit size, dropdowns for the attribution method, the ablation and the task.

    Every change calls :meth:`update`, which takes edges in order of ``|score|`` from the cached
    :class:`EdgeScores` of (task, method, ablation) until ``size`` edges survive pruning
    (``top_n(size, fill=True)``), measures the circuit's faithfulness (one patched forward pass)
    and redraws the circuit next to the faithfulness curve. Tests can set
    ``explorer.size.value = 5`` and read ``explorer.text.value`` / ``explorer.figure`` /
    ``explorer.faithfulness``.

    Args:
        model: a :class:`TinyTransformer`.
        prompts: ``{task name: PromptPairs}`` (clean/corrupted prompts with their answers).
        metric: ``metric(logits, pairs) -> scalar`` (default :func:`logit_diff`).
        methods: attribution methods offered (``"eap"``, ``"eap-ig"``, ``"exact"``).
        initial_size: starting circuit size (edges before pruning).
        ablation: the initial ablation (``"corrupted"``, ``"zero"``, ``"mean"``, ``"mean-positional"``;
            the dropdown offers all four): what patched edges carry, for the scores and faithfulness.
    """

    def __init__(
        self,
        model: TinyTransformer,
        prompts: Mapping[str, PromptPairs],
        metric: Metric = logit_diff,
        methods: Sequence[str] = ("eap", "eap-ig"),
        ig_steps: int = 5,
        initial_size: int = 20,
        ablation: str = "corrupted",
    ) -> None:
        self.graph = Graph.from_model(model)
        if not prompts:
            raise ValueError("prompts: expected at least one {task name: PromptPairs}, got none")
        for name, p in prompts.items():
            if not isinstance(p, PromptPairs):
                raise TypeError(f"prompts[{name!r}]: expected PromptPairs, got {type(p).__name__}")
        for m in methods:
            check_choice("methods", m, list(_METHOD_LABELS))
        self.model, self.prompts, self.metric = model, dict(prompts), metric
        self.ig_steps = check_positive_int("ig_steps", ig_steps)
        check_choice("ablation", ablation, list(ABLATIONS))
        initial_size = min(check_positive_int("initial_size", initial_size), self.graph.n_edges)
        self.size = widgets.IntSlider(value=initial_size, min=1, max=self.graph.n_edges, description="edges",
                                      continuous_update=False)
        self.method = widgets.Dropdown(options=[(_METHOD_LABELS[m], m) for m in methods], value=methods[0],
                                       description="method")
        self.task = widgets.Dropdown(options=list(self.prompts), value=next(iter(self.prompts)), description="task")
        self.ablation_control = widgets.Dropdown(options=list(ABLATIONS), value=ablation, description="ablation")
        self.text = widgets.HTML()
        self.output = widgets.Output()
        self.figure: Figure | None = None
        self.faithfulness: float = float("nan")
        self._scores: dict[tuple[str, str, str], EdgeScores] = {}
        self._curves: dict[tuple[str, str, str], FaithfulnessCurve] = {}
        for control in (self.size, self.method, self.task, self.ablation_control):
            control.observe(self.update, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.task, self.method, self.ablation_control, self.size]),
                                    self.text, self.output])
        self.update()

    @property
    def ablation(self) -> str:
        """The ablation currently selected."""
        return str(self.ablation_control.value)

    # -- cached computations ----------------------------------------------------------
    def scores(self, task: str, method: str, ablation: str | None = None) -> EdgeScores:
        key = (task, method, ablation or self.ablation)
        if key not in self._scores:
            self._scores[key] = attribute(self.model, self.graph, self.prompts[task], metric=self.metric,
                                          method=method, ig_steps=self.ig_steps, ablation=key[2])
        return self._scores[key]

    def curve(self, task: str, method: str, ablation: str | None = None) -> FaithfulnessCurve:
        key = (task, method, ablation or self.ablation)
        if key not in self._curves:
            self._curves[key] = faithfulness_curve(self.model, self.scores(*key), self.prompts[task],
                                                   metric=self.metric, ablation=key[2])
        return self._curves[key]

    # -- callback ---------------------------------------------------------------------
    def update(self, change: dict[str, Any] | None = None) -> None:
        """Recompute the circuit for the current controls and redraw."""
        task, method, size = self.task.value, self.method.value, int(self.size.value)
        scores = self.scores(task, method)
        circuit = scores.top_n(size, fill=True)
        self.circuit = circuit
        self.faithfulness = faithfulness(self.model, circuit, self.prompts[task], metric=self.metric,
                                         ablation=self.ablation)
        label = f"{task} / {_METHOD_LABELS[method]} / {self.ablation}"
        self.text.value = (f"<b>{html.escape(label)}</b>: the top edges by |score| until {size} survive pruning "
                           f"&rarr; {circuit.n_edges} edges, {circuit.n_nodes} nodes; "
                           f"faithfulness {self.faithfulness:.3f} ({html.escape(self.ablation)} ablation; "
                           f"area under the faithfulness curve {self.curve(task, method).area:.3f})")
        self.figure = cplots.explorer_figure(self.graph, circuit, scores, self.curve(task, method), label,
                                             self.faithfulness)
        show_figure(self.output, self.figure)

    def _ipython_display_(self) -> None:
        display(self.widget)
