"""Widgets for notebook 02 (Stochastic Parameter Decomposition).

* :class:`SubcomponentBrowser` - pick a subcomponent: its rank-one weight, its causal importance
  on each one-hot input, and the model output when only it is kept.
* :class:`SweepExplorer` - step through a precomputed importance-minimality sweep
  (coefficient x ``p``) and watch the one-hot CI pattern and the alive count change.
* :class:`TokenBrowser` - for a language-model decomposition (:func:`mechnb.experiments.spd.tiny_lm_mlp`):
  pick a layer and a subcomponent, read the contexts where it is causally important, each word
  shaded by its causal importance, with its grammar-class score.

Each panel holds its controls; the callback is a plain method (``update``), so a test can set
``panel.subcomponent.value = 3`` and check ``panel.text.value`` / ``panel.figure``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import display
from matplotlib.figure import Figure

from mechnb.experiments.spd import LMDecomposition, SubcomponentTokens, SweepPoint
from mechnb.plots import spd as splots
from mechnb.spd import (
    SPDResult,
    keep_only_output,
    match_columns,
    one_hot_causal_importances,
    summarize,
)
from mechnb.widgets._common import show_figure

__all__ = ["SubcomponentBrowser", "SweepExplorer", "TokenBrowser"]


class SubcomponentBrowser:
    """Browse the subcomponents of one decomposed layer.

    Controls: ``subcomponent`` (dropdown, alive ones first, labelled with their largest CI) and
    ``input_feature`` (which one-hot input the output panel uses; ``-1`` = the input the
    subcomponent is most important for). Outputs: ``text`` (HTML summary) and ``figure``
    (:func:`mechnb.plots.spd.subcomponent_card`).

    Args:
        result: an :class:`~mechnb.spd.SPDResult`.
        module: the layer to browse (default: the first decomposed layer).
        magnitude: value of the active feature in the one-hot inputs (paper: 0.75).
        n_features: number of one-hot inputs (default ``model.n_features``).
    """

    def __init__(self, result: SPDResult, module: str | None = None, magnitude: float = 0.75,
                 n_features: int | None = None) -> None:
        if not isinstance(result, SPDResult):
            raise TypeError(f"result: expected an SPDResult, got {type(result).__name__}")
        self.result = result
        self.module = result.modules[0] if module is None else module
        result._check_module(self.module)
        self.ci = one_hot_causal_importances(result, n_features, magnitude)[self.module]  # (n_in, C)
        self.n_inputs = self.ci.shape[0]
        dtype = result.components.dtype
        self.x = torch.eye(self.n_inputs, device=result._device(), dtype=dtype) * magnitude
        with torch.no_grad():
            self.target_out = result.model(self.x).detach().cpu().numpy()
            self.all_out = result.masked_forward(self.x).detach().cpu().numpy()
        self.ci_max = (result.ci_max[self.module].cpu().numpy() if result.ci_max
                       else self.ci.max(axis=0))
        order = sorted(range(result.C), key=lambda c: (-int(self.ci_max[c] > 0.1), -float(self.ci_max[c]), c))
        options = [(f"c={c}  ({'alive' if self.ci_max[c] > 0.1 else 'dead'}, max CI {self.ci_max[c]:.2f})", c)
                   for c in order]
        self.subcomponent = widgets.Dropdown(options=options, value=order[0], description="subcomponent")
        self.input_feature = widgets.Dropdown(
            options=[("most important input", -1)] + [(f"x{j}", j) for j in range(self.n_inputs)], value=-1,
            description="input")
        self.text = widgets.HTML()
        self.output = widgets.Output()
        self.figure: Figure | None = None
        self.subcomponent.observe(lambda _c: self.update(), names="value")
        self.input_feature.observe(lambda _c: self.update(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.subcomponent, self.input_feature]), self.text, self.output])
        self.update()

    def data(self, c: int, j: int) -> dict[str, Any]:
        """Everything the card shows for subcomponent ``c`` on one-hot input ``j`` (``-1``: argmax CI)."""
        if j < 0:
            j = int(np.argmax(self.ci[:, c]))
        kept = keep_only_output(self.result, self.x[j : j + 1], self.module, c)[0].cpu().numpy()
        return {
            "weight": self.result.subcomponent_weights(self.module)[c].cpu().numpy(),
            "ci": self.ci[:, c],
            "kept": kept,
            "target": self.target_out[j],
            "all": self.all_out[j],
            "input": j,
        }

    def update(self) -> None:
        c, j = int(self.subcomponent.value), int(self.input_feature.value)
        d = self.data(c, j)
        U, V = self.result.U[self.module][:, c], self.result.V[self.module][:, c]
        tied = [n for n in self.result.modules if n != self.module and
                self.result.tied.get(n, n) == self.result.tied.get(self.module, self.module)]
        note = f" (kept in {', '.join([self.module] + tied)})" if tied else ""
        self.text.value = (
            f"<b>{html.escape(self.module)} subcomponent {c}</b>: |U_c| |V_c| = {float(U.norm() * V.norm()):.3f}, "
            f"largest CI on the one-hot inputs {float(d['ci'].max()):.2f} (input x{int(np.argmax(d['ci']))}); "
            f"output on input x{d['input']} with only this subcomponent kept{html.escape(note)}: "
            f"{float(d['kept'][d['input']]):.3f} vs target {float(d['target'][d['input']]):.3f}"
        )
        self.figure = splots.subcomponent_card(
            d["weight"], d["ci"], d["kept"], d["target"], d["input"], output_all=d["all"],
            title=f"{self.module}: subcomponent {c}")
        show_figure(self.output, self.figure)

    def _ipython_display_(self) -> None:
        display(self.widget)


class SweepExplorer:
    """Step through an importance-minimality sweep (:func:`mechnb.experiments.spd.importance_minimality_sweep`).

    Controls: ``coefficient`` (selection slider) and ``p`` (toggle buttons over the exponent
    schedules in the sweep, e.g. ``"2"`` constant or ``"2→1"`` annealed). Outputs: ``text``
    (alive count, MMCS / ML2R, final losses, off-diagonal CI count) and ``figure`` (one-hot CI
    heatmap with Hungarian-matched columns).

    Args:
        points: the sweep (every ``(coefficient, p)`` pair once).
        module: the layer to show (default: the first decomposed layer).
        magnitude: one-hot input magnitude (paper: 0.75).
    """

    def __init__(self, points: Sequence[SweepPoint], module: str | None = None, magnitude: float = 0.75) -> None:
        if not points or not all(isinstance(p, SweepPoint) for p in points):
            raise TypeError("points: expected a non-empty list of SweepPoint (from importance_minimality_sweep)")
        self.points = {(float(p.coefficient), p.p_label): p for p in points}
        self.module = points[0].result.modules[0] if module is None else module
        points[0].result._check_module(self.module)
        self.magnitude = magnitude
        coefs = sorted({k[0] for k in self.points})
        ps = list(dict.fromkeys(k[1] for k in self.points))
        self.coefficient = widgets.SelectionSlider(options=[(f"{c:.1e}", c) for c in coefs],
                                                   value=coefs[len(coefs) // 2], description="coefficient",
                                                   continuous_update=False)
        self.p = widgets.ToggleButtons(options=[(f"p={p}", p) for p in ps], value=ps[0], description="p")
        self.text = widgets.HTML()
        self.output = widgets.Output()
        self.figure: Figure | None = None
        self._cache: dict[tuple[float, str], tuple[np.ndarray, dict[str, float]]] = {}
        self.coefficient.observe(lambda _c: self.update(), names="value")
        self.p.observe(lambda _c: self.update(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.coefficient, self.p]), self.text, self.output])
        self.update()

    def data(self, coefficient: float, p: str) -> tuple[np.ndarray, dict[str, float]]:
        """``(matched one-hot CI (n_inputs, C), summary numbers)`` of one run (cached); ``p`` is a ``p_label``."""
        key = (float(coefficient), str(p))
        if key not in self.points:
            raise ValueError(f"(coefficient, p): {key} is not in the sweep; available {sorted(self.points)}")
        if key not in self._cache:
            res = self.points[key].result
            ci = one_hot_causal_importances(res, magnitude=self.magnitude)[self.module]
            ci = ci[:, match_columns(ci)] if ci.shape[0] <= ci.shape[1] else ci
            self._cache[key] = (ci, summarize(res, self.module, magnitude=self.magnitude))
        return self._cache[key]

    def update(self) -> None:
        c, p = float(self.coefficient.value), str(self.p.value)
        key = (c, p)
        if key not in self.points:
            self.text.value = f"<i>no run for coefficient {c:.1e} with p={html.escape(p)} in this sweep</i>"
            return
        ci, s = self.data(c, p)
        self.text.value = (
            f"<b>coefficient {c:.1e}, p={html.escape(p)}</b>: {int(s['n_alive'])} alive subcomponents in "
            f"{html.escape(self.module)}; MMCS {s['mmcs']:.3f}, ML2R {s['ml2r']:.3f}; stochastic recon "
            f"{s['stochastic_recon']:.2e}; off-diagonal CI &gt; 0.1 on one-hot inputs: {int(s['onehot_n_offdiag_above'])}"
        )
        self.figure = splots.ci_heatmaps({self.module: ci}, n_show=min(ci.shape[1], max(2 * ci.shape[0], 10)),
                                         title=f"one-hot causal importances, coefficient {c:.1e}, p={p}")
        show_figure(self.output, self.figure)

    def _ipython_display_(self) -> None:
        display(self.widget)


class TokenBrowser:
    """Browse a language-model decomposition's subcomponents by the tokens they are important on.

    Controls: ``layer`` (dropdown over the decomposed weights) and ``subcomponent`` (its alive
    subcomponents, commonest first, labelled with their dominant grammar class). Output: ``text``
    (HTML): the class scores of :class:`mechnb.experiments.spd.SubcomponentTokens` and the
    top contexts, every word shaded by the subcomponent's causal importance at that position
    (the important word in bold, the next word in grey).

    Args:
        lm: an :class:`mechnb.experiments.spd.LMDecomposition`.
        n_contexts: contexts shown.
    """

    def __init__(self, lm: LMDecomposition, n_contexts: int = 8) -> None:
        if not isinstance(lm, LMDecomposition):
            raise TypeError(f"lm: expected an LMDecomposition (from experiments.spd.tiny_lm_mlp), got {type(lm).__name__}")
        layers = [n for n, subs in lm.subcomponents.items() if subs]
        if not layers:
            raise ValueError("lm: no decomposed layer has an alive subcomponent to browse")
        self.lm, self.n_contexts = lm, int(n_contexts)
        self.layer = widgets.Dropdown(options=layers, value=layers[0], description="layer")
        self.subcomponent = widgets.Dropdown(description="subcomponent")
        self.text = widgets.HTML()
        self._set_options()
        self.layer.observe(lambda _c: (self._set_options(), self.update()), names="value")
        self.subcomponent.observe(lambda _c: self.update(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.layer, self.subcomponent]), self.text])
        self.update()

    def _set_options(self) -> None:
        subs = self.lm.subcomponents[self.layer.value]
        self.subcomponent.options = [(f"c={s.c}  ({s.firing_rate:.1%} of tokens; {s.token_class} {s.purity:.2f})", s.c)
                                     for s in subs]
        self.subcomponent.value = subs[0].c

    def data(self, layer: str, c: int) -> SubcomponentTokens:
        """The :class:`SubcomponentTokens` of subcomponent ``c`` of ``layer``."""
        for s in self.lm.subcomponents.get(layer, []):
            if s.c == int(c):
                return s
        raise ValueError(f"(layer, c): {layer!r} has no browsable subcomponent {c!r}")

    def _context_html(self, s: SubcomponentTokens, k: int) -> str:
        t = s.top[k]
        g = self.lm.ci[s.layer][t.row, : t.pos + 1, s.c]
        words = []
        for i, (w, v) in enumerate(zip(t.words, g)):
            word = html.escape(w)
            style = f"background: rgba(220, 80, 30, {float(np.clip(v, 0, 1)):.2f}); padding: 0 2px"
            words.append(f'<span style="{style}">{"<b>" + word + "</b>" if i == t.pos else word}</span>')
        words.append(f'<span style="color: #999">{html.escape(t.next_token)}</span>')
        return f"<div style='font-family: monospace'>{t.ci:.2f}&nbsp;&nbsp;{' '.join(words)}</div>"

    def update(self) -> None:
        s = self.data(self.layer.value, self.subcomponent.value)
        verdict = "one grammar class" if s.corresponds() else "no single grammar class"
        head = (
            f"<b>{html.escape(s.layer)} subcomponent {s.c}</b>: important (CI &gt; 0.5) on {s.n_important} tokens "
            f"({s.firing_rate:.1%}); current token: <b>{html.escape(s.token_class)}</b> {s.purity:.0%} "
            f"(base rate {s.base_rate:.0%}, lift {s.lift:.1f}); next token: {html.escape(s.next_class)} "
            f"{s.next_purity:.0%} (base {s.next_base_rate:.0%}); grammar part: {html.escape(s.part)} "
            f"{s.part_share:.0%} (base {s.part_base_rate:.0%}) &rarr; {verdict}"
        )
        ctx = "".join(self._context_html(s, k) for k in range(min(self.n_contexts, len(s.top))))
        self.text.value = head + "<br>" + ctx

    def _ipython_display_(self) -> None:
        display(self.widget)
