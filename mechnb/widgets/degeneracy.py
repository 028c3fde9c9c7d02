"""Widgets for notebook 01: plant degeneracies and watch the Gauss-Newton nullity move.

Each panel is a class holding its controls; the callback is a plain method (``update``), so a
test can set ``panel.slider.value = 3`` and check ``panel.text.value`` / ``panel.figure``.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
from IPython.display import display
from matplotlib.figure import Figure

from mechnb.degeneracy import Modules, degeneracy_report, find_modules
from mechnb.degeneracy.interaction import InteractionEdges
from mechnb.experiments.degeneracy import planted_mlp
from mechnb.plots import degeneracy as dplots
from mechnb.widgets._common import show_figure

__all__ = ["DegeneracyPanel", "ModulesPanel", "KIND_LABELS"]

#: planted degeneracy -> (label, what each unit adds to the nullity, as a formula string)
KIND_LABELS = {
    "duplicated": ("duplicated neurons", "each copy: d_out outgoing directions (Gram nullity) + 1 rescaling"),
    "unread": ("unread neurons", "each (zero outgoing weights): d_in + 1 incoming directions (Jacobian nullity)"),
    "dead": ("dead neurons", "each: d_in + 1 incoming (Jacobian nullity) + d_out outgoing (Gram nullity)"),
    "synchronised": ("synchronised ReLUs", "m ReLUs with one firing pattern: m rescalings + m(m−1) mixings"),
}


class DegeneracyPanel:
    """A slider that plants ``k`` degenerate neurons into a small ReLU MLP, and the nullity they cause.

    Controls: ``kind`` (duplicated / unread / dead / synchronised), ``slider`` (``k``) and
    ``reveal`` (a toggle). Predict first: until ``reveal`` is pressed, ``text`` shows the network
    and the question only, and ``figure`` is ``None``; once revealed, ``text`` (HTML: the per-layer
    report and predicted vs measured nullity) and ``figure`` (measured vs predicted nullity over
    every ``k``, the current one marked). Changing the kind or ``k`` hides the answer again, so
    every setting is predicted before it is shown.

    The network is :func:`mechnb.experiments.degeneracy.planted_mlp` with ``d_hidden`` generic
    neurons and, by default, the shape of the notebook's planted networks (4 inputs, 3 outputs);
    the measured value is the rank deficit of the behavioural Gauss-Newton matrix. One kind is
    planted at a time; combine kinds with ``planted_mlp`` and ``degeneracy_report`` directly.
    """

    def __init__(self, d_in: int = 4, d_hidden: int = 6, d_out: int = 3, max_k: int = 6, seed: int = 0,
                 kind: str = "duplicated", k: int = 0, reveal: bool = False) -> None:
        if kind not in KIND_LABELS:
            raise ValueError(f"kind: expected one of {list(KIND_LABELS)}, got {kind!r}")
        if not isinstance(reveal, bool):
            raise TypeError(f"reveal: expected a bool, got {type(reveal).__name__}")
        self.d_in, self.d_hidden, self.d_out, self.seed = d_in, d_hidden, d_out, seed
        self.max_k = max_k
        self.kind = widgets.Dropdown(options=[(v[0], key) for key, v in KIND_LABELS.items()], value=kind,
                                     description="plant")
        self.slider = widgets.IntSlider(value=min(k, self._max_for(kind)), min=0, max=self._max_for(kind),
                                        description="k", continuous_update=False)
        self.reveal = widgets.ToggleButton(value=reveal, description="reveal", tooltip="show predicted and measured")
        self.text = widgets.HTML()
        self.output = widgets.Output()
        self.figure: Figure | None = None
        self._sweeps: dict[str, tuple[list[int], list[int], list[int]]] = {}
        self.kind.observe(self._on_kind, names="value")
        self.slider.observe(self._on_k, names="value")
        self.reveal.observe(self._on_reveal, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.kind, self.slider, self.reveal]),
                                    widgets.HBox([self.text, self.output])])
        self.update()

    def _max_for(self, kind: str) -> int:
        return min(self.max_k, self.d_in, self.d_out) if kind == "synchronised" else self.max_k

    def _hide(self) -> None:
        if self.reveal.value:
            self.reveal.unobserve(self._on_reveal, names="value")
            self.reveal.value = False
            self.reveal.observe(self._on_reveal, names="value")

    def _on_kind(self, change: dict[str, Any]) -> None:
        new_max = self._max_for(change["new"])
        if self.slider.value > new_max:
            self.slider.unobserve(self._on_k, names="value")
            self.slider.value = new_max
            self.slider.observe(self._on_k, names="value")
        self.slider.max = new_max
        self._hide()
        self.update()

    def _on_k(self, change: dict[str, Any]) -> None:
        self._hide()
        self.update()

    def _on_reveal(self, change: dict[str, Any]) -> None:
        self.update()

    def report(self, kind: str, k: int):
        """The :class:`~mechnb.degeneracy.DegeneracyReport` of the network with ``k`` planted units."""
        model, x = planted_mlp(self.d_in, self.d_hidden, self.d_out, seed=self.seed, **{kind: k})
        return degeneracy_report(model, x)

    def sweep(self, kind: str) -> tuple[list[int], list[int], list[int]]:
        """``(ks, measured, predicted)`` for ``k = 0 .. max`` (cached per kind)."""
        if kind not in self._sweeps:
            ks = list(range(self._max_for(kind) + 1))
            reps = [self.report(kind, k) for k in ks]
            self._sweeps[kind] = (ks, [r.measured_nullity for r in reps], [r.predicted_nullity for r in reps])
        return self._sweeps[kind]

    def update(self) -> None:
        """Recompute for the current controls; show the question, or (revealed) the answer and the figure."""
        kind, k = self.kind.value, int(self.slider.value)
        label, rule = KIND_LABELS[kind]
        n_params = (self.d_in + 1) * self.d_hidden + (self.d_hidden + 1) * self.d_out
        head = (f"<b>{k} {html.escape(label)}</b> on top of {self.d_hidden} generic ReLUs "
                f"(d_in={self.d_in}, d_out={self.d_out}; {n_params} parameters without the planted units).<br>")
        if not self.reveal.value:
            self.text.value = (head + "How many free directions (Gauss-Newton nullity) does this network have? "
                               "Work it out from the rules in the text, then press <b>reveal</b>.")
            self.figure = None
            self.output.clear_output()
            return
        rep = self.report(kind, k)
        base = self.sweep(kind)[1][0]
        self.text.value = (
            head + f"{html.escape(rule)}.<br>"
            f"predicted nullity <b>{rep.predicted_nullity}</b> · measured <b>{rep.measured_nullity}</b> "
            f"(of {rep.gauss_newton.n_params} parameters; {rep.measured_nullity - base} more than with k = 0)"
            f"<pre style='font-size:11px'>{html.escape(rep.table())}</pre>"
        )
        ks, measured, predicted = self.sweep(kind)
        self.figure = dplots.nullity_sweep(ks, measured, predicted, xlabel=f"k = number of {label}", current=k,
                                           title=f"{label}: Gauss-Newton nullity")
        show_figure(self.output, self.figure)

    def _ipython_display_(self) -> None:
        display(self.widget)


class ModulesPanel:
    """A resolution slider for the Louvain modules of an interaction graph, drawn as a layered graph.

    ``panel.slider.value = 0.5`` re-runs :func:`mechnb.degeneracy.find_modules` and redraws;
    ``panel.modules`` holds the current partition and ``panel.text`` its summary.
    """

    def __init__(self, edges: InteractionEdges, which: str = "ib", resolution: float = 1.0, seed: int = 0,
                 max_edges: int = 400) -> None:
        if not isinstance(edges, InteractionEdges):
            raise TypeError(f"edges: expected an InteractionEdges, got {type(edges).__name__}")
        self.edges, self.which, self.seed, self.max_edges = edges, which, seed, max_edges
        self.slider = widgets.FloatLogSlider(value=resolution, base=10, min=-1.5, max=1, step=0.05,
                                             description="resolution", continuous_update=False)
        self.text = widgets.HTML()
        self.output = widgets.Output()
        self.figure: Figure | None = None
        self.modules: Modules | None = None
        self.slider.observe(self._on_change, names="value")
        self.widget = widgets.VBox([self.slider, self.text, self.output])
        self.update()

    def _on_change(self, change: dict[str, Any]) -> None:
        self.update()

    def update(self) -> None:
        """Re-run Louvain at the slider's resolution and redraw."""
        self.modules = find_modules(self.edges, resolution=float(self.slider.value), seed=self.seed, which=self.which)
        sizes = [len(c) for c in self.modules.communities if len(c) > 1]
        self.text.value = (f"resolution {self.slider.value:.3g}: <b>{len(sizes)}</b> modules of sizes {sizes[:12]}"
                           f"{' …' if len(sizes) > 12 else ''}, modularity Q = <b>{self.modules.modularity:.3f}</b>")
        self.figure = dplots.module_graph(self.modules, max_edges=self.max_edges)
        show_figure(self.output, self.figure)

    def _ipython_display_(self) -> None:
        display(self.widget)
