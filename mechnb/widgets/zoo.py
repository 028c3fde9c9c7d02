"""The zoo browser of notebook 00: pick a model, see its summary and its signature figure."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import display
from matplotlib.figure import Figure
from torch import nn

from mechnb import metrics, plots, zoo
from mechnb.models import TMS, MLP, ResidualMLP, TinyTransformer
from mechnb.widgets._common import show_figure

__all__ = ["ZooBrowser", "model_figure", "model_summary_html"]


def model_figure(name: str, model: nn.Module, entry: dict[str, Any]) -> Figure:
    """The figure that best shows what zoo model ``name`` learned."""
    if isinstance(model, TMS):
        W = model.linear1.weight.detach().cpu().numpy()  # (n_hidden, n_features)
        return plots.zoo.tms_geometry(W, title=f"{name}: feature directions")
    if isinstance(model, ResidualMLP):
        # (n_features, n_layers * d_mlp): every layer's neurons, layer 0 first
        W = torch.cat([model.W_E @ block.mlp_in.weight.T for block in model.layers], dim=1).detach().cpu().numpy()
        layers = "" if model.n_layers == 1 else f", {model.n_layers} layers x {model.d_mlp} neurons stacked"
        return plots.zoo.weight_heatmap(W.T, f"{name}: neuron read-out of each feature (W_in · W_E^T{layers})",
                                     xlabel="input feature", ylabel="MLP neuron")
    if isinstance(model, MLP):
        evals = entry["curves"]["evals"]
        steps = np.array([e["step"] for e in evals])
        return plots.zoo.training_curves(steps, {"train accuracy": [e["train_acc"] for e in evals],
                                              "test accuracy": [e["test_acc"] for e in evals]},
                                      "accuracy", f"{name}: modular addition (train vs held-out pairs)")
    if isinstance(model, TinyTransformer):
        lang = zoo.task_for(name)
        occs, p_she, stereo = metrics.occupation_pronoun_probs(model, lang)  # type: ignore[arg-type]
        return plots.zoo.pronoun_bias(occs, p_she.numpy(), stereo,
                                      corpus_bias=lang.occupation_bias)  # type: ignore[union-attr]
    raise TypeError(f"model: no figure for {type(model).__name__}")


def model_summary_html(name: str, model: nn.Module, entry: dict[str, Any]) -> str:
    """A short HTML table: description, architecture, parameter count, key metrics."""
    n_params = sum(p.numel() for p in model.parameters())
    rows = [("description", entry["description"]), ("architecture", f"{entry['arch']}({entry['config']})"),
            ("parameters", f"{n_params:,}"), ("seed", entry["seed"])]
    for k, v in entry["metrics"].items():
        if isinstance(v, float):
            rows.append((k, f"{v:.4g}"))
        elif isinstance(v, int):
            rows.append((k, str(v)))
    body = "".join(f"<tr><td><b>{html.escape(str(k))}</b></td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<h4>{html.escape(name)}</h4><table>{body}</table>"


class ZooBrowser:
    """Dropdown of zoo models -> summary table + figure. ``browser.dropdown.value = "tms-5-2"`` redraws."""

    def __init__(self, names: list[str] | None = None, initial: str | None = None) -> None:
        options = names or zoo.names()
        self.dropdown = widgets.Dropdown(options=options, value=initial or options[0], description="model")
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self.figure: Figure | None = None
        self.dropdown.observe(self._on_change, names="value")
        self.widget = widgets.VBox([self.dropdown, widgets.HBox([self.summary, self.output])])
        self.render(self.dropdown.value)

    def _on_change(self, change: dict[str, Any]) -> None:
        self.render(change["new"])

    def render(self, name: str) -> None:
        """Load ``name`` and redraw the summary and the figure."""
        model, entry = zoo.load(name)
        self.summary.value = model_summary_html(name, model, entry)
        self.figure = model_figure(name, model, entry)
        show_figure(self.output, self.figure)

    def _ipython_display_(self) -> None:
        display(self.widget)
