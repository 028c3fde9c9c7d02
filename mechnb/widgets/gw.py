"""Notebook 03's explorer: pick a model and GW settings, see the layer x layer GW matrix and its groups."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import display
from matplotlib.figure import Figure
from torch import nn

from mechnb.gw import (
    METRICS,
    GWSolverError,
    LayerMatrix,
    auto_threshold,
    cluster_layers,
    layer_groups,
    layer_gw_matrix,
    layer_linkage,
    layer_representations,
)
from mechnb.plots import gw as gwplots
from mechnb.widgets._common import show_figure

__all__ = ["GWExplorer"]

ModelSpec = tuple[nn.Module, torch.Tensor] | tuple[nn.Module, torch.Tensor, dict[str, Any]]


class GWExplorer:
    """Controls -> GW heatmap + dendrogram + groups.

    Args:
        models: ``name -> (model, inputs)`` or ``(model, inputs, kwargs)`` where ``kwargs`` go to
            :func:`~mechnb.gw.layer_representations` (e.g. ``position="last", pad_id=0``).
        n_samples: initial number of inputs compared (a seeded subset).
        seed: seeds the subset.

    Controls (set ``.value`` to drive it from code): ``model``, ``n_samples``, ``metric``,
    ``normalize``, ``solver``, ``epsilon`` (entropic only), ``cut`` (dendrogram cut as a fraction
    of the largest merge height; 0 = automatic, the largest gap). Changing any of the first six
    recomputes the GW matrix (:meth:`update`); ``cut`` only re-clusters (:meth:`regroup`).
    After each change ``result`` (a :class:`~mechnb.gw.LayerMatrix`), ``labels``, ``figure``
    and the ``groups``/``status`` HTML reflect the current settings; a failed solve (e.g. an
    entropic ``epsilon`` too small) is reported in ``status`` instead of raising.
    """

    def __init__(self, models: Mapping[str, ModelSpec], *, n_samples: int = 200, seed: int = 0) -> None:
        if not models:
            raise ValueError("models: expected at least one name -> (model, inputs) entry, got none")
        self.specs: dict[str, tuple[nn.Module, torch.Tensor, dict[str, Any]]] = {}
        for name, spec in models.items():
            if not isinstance(spec, tuple) or len(spec) not in (2, 3):
                raise TypeError(f"models[{name!r}]: expected (model, inputs) or (model, inputs, kwargs), got {spec!r}")
            self.specs[name] = (spec[0], spec[1], dict(spec[2]) if len(spec) == 3 else {})
        self.seed = seed
        self._reps: dict[str, Any] = {}
        first = next(iter(self.specs))
        n_max = int(self.specs[first][1].shape[0])
        self.model = widgets.Dropdown(options=list(self.specs), value=first, description="model")
        self.n_samples = widgets.IntSlider(value=min(n_samples, n_max), min=min(20, n_max), max=n_max, step=10,
                                           description="n samples", continuous_update=False)
        self.metric = widgets.Dropdown(options=list(METRICS), value="euclidean", description="metric")
        self.normalize = widgets.Dropdown(options=["max", "mean", "none"], value="max", description="normalise")
        self.solver = widgets.Dropdown(options=["exact", "entropic"], value="exact", description="solver")
        self.epsilon = widgets.FloatLogSlider(value=1e-2, base=10, min=-4, max=0, step=0.25, description="epsilon",
                                              disabled=True, continuous_update=False)
        self.cut = widgets.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.02, description="cut (x max)",
                                       continuous_update=False)
        self.groups = widgets.HTML()
        self.status = widgets.HTML()
        self.output = widgets.Output()
        self.result: LayerMatrix | None = None
        self.labels: np.ndarray | None = None
        self.figure: Figure | None = None
        for w in (self.model, self.n_samples, self.metric, self.normalize, self.solver, self.epsilon):
            w.observe(self._on_settings, names="value")
        self.cut.observe(self._on_cut, names="value")
        controls = widgets.VBox([self.model, self.n_samples, self.metric, self.normalize, self.solver, self.epsilon,
                                 self.cut, self.status])
        self.widget = widgets.VBox([widgets.HBox([controls, self.groups]), self.output])
        self.update()

    # -- callbacks ------------------------------------------------------------------------
    def _on_settings(self, change: dict[str, Any]) -> None:
        if change["owner"] is self.model:
            n_max = int(self.specs[self.model.value][1].shape[0])
            self.n_samples.unobserve(self._on_settings, names="value")
            self.n_samples.max = n_max
            self.n_samples.value = min(self.n_samples.value, n_max)
            self.n_samples.observe(self._on_settings, names="value")
        self.epsilon.disabled = self.solver.value != "entropic"
        self.update()

    def _on_cut(self, change: dict[str, Any]) -> None:
        self.regroup()

    # -- computation ----------------------------------------------------------------------
    def representations(self, name: str) -> Any:
        """The (cached) layer representations of model ``name`` on all its inputs."""
        if name not in self._reps:
            model, inputs, kw = self.specs[name]
            self._reps[name] = layer_representations(model, inputs, **kw)
        return self._reps[name]

    def update(self) -> None:
        """Recompute the GW matrix for the current settings, then re-cluster and redraw."""
        reps = self.representations(self.model.value)
        solver = self.solver.value
        normalize = None if self.normalize.value == "none" else self.normalize.value
        try:
            self.result = layer_gw_matrix(
                reps, metric=self.metric.value, normalize=normalize,
                solver=solver, epsilon=float(self.epsilon.value) if solver == "entropic" else None,
                n_samples=int(self.n_samples.value), seed=self.seed, progress=False)
        except (GWSolverError, ValueError) as e:
            self.result, self.labels = None, None
            self.status.value = f"<span style='color:crimson'><b>solve failed:</b> {html.escape(str(e))}</span>"
            self.groups.value = ""
            self._draw()
            return
        r = self.result
        self.status.value = (f"{len(r.names)} layers, n = {r.n_samples}, {r.seconds:.2f}s, "
                             f"mean solver iterations {r.n_iter[np.triu_indices(len(r.names), 1)].mean():.1f}")
        self.regroup()

    def threshold(self) -> float | None:
        """The dendrogram cut height for the current ``cut`` slider (0 = automatic: the largest gap)."""
        if self.result is None:
            return None
        if self.cut.value <= 0:
            return auto_threshold(self.result.matrix)
        return float(self.cut.value * layer_linkage(self.result.matrix)[:, 2].max())

    def regroup(self) -> None:
        """Re-cluster the current matrix with the current cut and redraw."""
        if self.result is None:
            return
        self.labels = cluster_layers(self.result.matrix, threshold=self.threshold())
        groups = layer_groups(self.labels, [gwplots.short_name(n) for n in self.result.names])
        items = "".join(f"<li>group {k}: {html.escape(', '.join(g))}</li>" for k, g in enumerate(groups))
        self.groups.value = f"<b>{len(groups)} groups</b><ul>{items}</ul>"
        self._draw()

    def _draw(self) -> None:
        if self.result is None:
            self.figure = None
            self.output.outputs = ()
            return
        self.figure = gwplots.plot_layer_comparison(self.result, gw_labels=self.labels, threshold=self.threshold(),
                                                    title=f"{self.model.value}: GW between layers")
        show_figure(self.output, self.figure)

    def _ipython_display_(self) -> None:
        display(self.widget)
