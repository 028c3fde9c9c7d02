"""Figures for Stochastic Parameter Decomposition (notebook 02).

Pure functions: arrays in, ``matplotlib.figure.Figure`` out, with labelled axes and titles.
Bushnaq, Braun & Sharkey (2025), https://arxiv.org/abs/2506.20790.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from mechnb._checks import check_array, check_positive_int

__all__ = [
    "loss_curves",
    "feature_arrows",
    "subcomponent_matrices",
    "ci_heatmaps",
    "sweep_summary",
    "subcomponent_card",
    "hard_sigmoids",
]

_LOSS_LABELS = {
    "faithfulness": "faithfulness  ||W - UV^T||^2 / N",
    "stochastic_recon": "stochastic reconstruction (all layers masked)",
    "stochastic_recon_layerwise": "stochastic layerwise reconstruction",
    "importance_minimality": "importance minimality  sum g^p",
    "total": "total (weighted sum)",
}


def _int_ticks(ax, n_rows: int, n_cols: int, limit: int = 12) -> None:
    """Integer tick labels on a heatmap of a small matrix."""
    if n_cols <= limit:
        ax.set_xticks(range(n_cols))
    if n_rows <= limit:
        ax.set_yticks(range(n_rows))


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or y.size < window:
        return y
    kernel = np.ones(window) / window
    head = np.cumsum(y[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(y, kernel, mode="valid")])


def loss_curves(history: Mapping[str, Sequence[float]], smooth: int = 25, title: str = "SPD training losses") -> Figure:
    """One log-scale panel per loss term of an SPD run (``SPDResult.history``).

    Args:
        history: ``{name: per-step values}``; the four losses and ``"total"`` are drawn if present.
        smooth: moving-average window (steps) drawn over the raw curve.
    """
    if not isinstance(history, Mapping):
        raise TypeError(f"history: expected a mapping {{loss name: values}}, got {type(history).__name__}")
    keys = [k for k in ("stochastic_recon", "stochastic_recon_layerwise", "importance_minimality", "faithfulness", "total")
            if k in history and len(history[k])]
    if not keys:
        raise ValueError(f"history: expected at least one of the SPD loss series, got keys {sorted(history)}")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.0), squeeze=False)
    for ax, k in zip(axes[0], keys):
        y = check_array(f"history[{k!r}]", history[k], ndim=1)
        steps = np.arange(1, y.size + 1)
        pos = np.maximum(y, 1e-12)
        ax.plot(steps, pos, color="0.8", lw=0.6)
        ax.plot(steps, _smooth(pos, smooth), color="C0", lw=1.4)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (log)")
        ax.set_title(_LOSS_LABELS.get(k, k), fontsize=8.5)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def feature_arrows(
    W: Any,
    sub_weights: Any | None = None,
    indices: Sequence[int] | None = None,
    title: str = "Feature directions (columns of W) and SPD subcomponents",
) -> Figure:
    """Left: the target's feature directions ``W[:, j]`` in a 2-D hidden space; right: the same
    with each listed subcomponent's dominant column ``U_c V_{c, j*}`` drawn on top.

    Args:
        W: ``(2, n_features)`` target weight (TMS ``linear1.weight``).
        sub_weights: ``(C, 2, n_features)`` rank-one subcomponent matrices (``SPDResult.subcomponent_weights``).
        indices: subcomponents to draw (default: all).
    """
    W = check_array("W", W, ndim=2)
    if W.shape[0] != 2:
        raise ValueError(f"W: expected a (2, n_features) weight (2-D hidden space), got shape {W.shape}")
    ncols = 1 if sub_weights is None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.0 * ncols, 4.0), squeeze=False)
    lim = 1.15 * max(np.abs(W).max(), 1e-6)
    ax = axes[0, 0]
    for j in range(W.shape[1]):
        ax.annotate("", xy=W[:, j], xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="k", lw=1.5))
        ax.text(*(W[:, j] * 1.08), f"x{j}", ha="center", va="center", fontsize=9)
    ax.set_title("target: W[:, j] per feature j", fontsize=9)
    if sub_weights is not None:
        S = np.asarray(sub_weights, dtype=np.float64)
        if S.ndim != 3 or S.shape[1:] != W.shape:
            raise ValueError(f"sub_weights: expected shape (C, {W.shape[0]}, {W.shape[1]}), got {S.shape}")
        idx = list(range(S.shape[0])) if indices is None else [int(i) for i in indices]
        ax2 = axes[0, 1]
        for j in range(W.shape[1]):
            ax2.plot([0, W[0, j]], [0, W[1, j]], color="0.8", lw=5, solid_capstyle="round")
        for k, c in enumerate(idx):
            norms = np.linalg.norm(S[c], axis=0)
            j = int(np.argmax(norms))
            v = S[c][:, j]
            ax2.annotate("", xy=v, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=f"C{k % 10}", lw=1.6))
            ax2.text(*(v * 1.12), f"c{c}", color=f"C{k % 10}", ha="center", va="center", fontsize=8)
        ax2.set_title("subcomponents (colour) over the features (grey)", fontsize=9)
    for a in axes[0]:
        a.set_xlim(-lim, lim)
        a.set_ylim(-lim, lim)
        a.set_aspect("equal")
        a.axhline(0, color="0.9", lw=0.8, zorder=0)
        a.axvline(0, color="0.9", lw=0.8, zorder=0)
        a.set_xlabel("hidden dim 0")
        a.set_ylabel("hidden dim 1")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def subcomponent_matrices(
    W: Any, sub_weights: Any, indices: Sequence[int], labels: Sequence[str] | None = None,
    title: str = "Target weight, the sum of the shown subcomponents, and each subcomponent",
) -> Figure:
    """Heatmaps: target ``W``, the sum of the chosen rank-one subcomponents, then each of them.

    Args:
        W: ``(d_out, d_in)`` target weight.
        sub_weights: ``(C, d_out, d_in)`` subcomponent matrices.
        indices: which subcomponents to show (e.g. the alive ones).
        labels: a caption per shown subcomponent (default ``"c=<index>"``).
    """
    W = check_array("W", W, ndim=2)
    S = np.asarray(sub_weights, dtype=np.float64)
    if S.ndim != 3 or S.shape[1:] != W.shape:
        raise ValueError(f"sub_weights: expected shape (C, {W.shape[0]}, {W.shape[1]}), got {S.shape}")
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError("indices: expected at least one subcomponent index, got none")
    if labels is not None and len(labels) != len(idx):
        raise ValueError(f"labels: expected {len(idx)} labels, got {len(labels)}")
    mats = [W, S[idx].sum(axis=0)] + [S[i] for i in idx]
    names = ["target W", "sum of shown"] + (list(labels) if labels is not None else [f"c={i}" for i in idx])
    vmax = max(np.abs(m).max() for m in mats) or 1.0
    n = len(mats)
    fig, axes = plt.subplots(1, n, figsize=(1.0 + 1.35 * n * max(1.0, W.shape[1] / 6), 2.9), squeeze=False,
                             constrained_layout=True)
    im = None
    for ax, m, name in zip(axes[0], mats, names):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("input j", fontsize=7)
        _int_ticks(ax, *m.shape)
        ax.tick_params(labelsize=6)
    axes[0, 0].set_ylabel("output i", fontsize=7)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="weight")
    fig.suptitle(title, fontsize=9)
    return fig


def ci_heatmaps(
    cis: Mapping[str, Any], orders: Mapping[str, Sequence[int]] | None = None, n_show: int | None = None,
    input_label: str = "one-hot input feature", title: str = "Causal importances on one-hot inputs",
    ncols: int | None = None,
) -> Figure:
    """One heatmap per layer of causal importances ``(n_inputs, C)``, columns permuted.

    Args:
        cis: ``{layer: (n_inputs, C)}`` (e.g. :func:`mechnb.spd.one_hot_causal_importances`).
        orders: ``{layer: column permutation}`` (e.g. :func:`mechnb.spd.match_columns`); the
            matched columns come first, so a perfect decomposition shows an identity.
        n_show: show only the first ``n_show`` columns after ordering (default all).
        ncols: panels per row (default up to 4; more layers wrap onto further rows).
    """
    if not cis:
        raise ValueError("cis: expected at least one {layer: (n_inputs, C)} entry, got none")
    ncols = min(len(cis), 4 if ncols is None else check_positive_int("ncols", ncols))
    nrows = -(-len(cis) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(cis):]:
        ax.set_visible(False)
    im = None
    for ax, (name, ci) in zip(axes.flat, cis.items()):
        arr = check_array(f"cis[{name!r}]", ci, ndim=2)
        order = np.arange(arr.shape[1]) if orders is None or name not in orders else np.asarray(orders[name])
        if sorted(order.tolist()) != list(range(arr.shape[1])):
            raise ValueError(f"orders[{name!r}]: expected a permutation of range({arr.shape[1]})")
        shown = arr[:, order][:, : (n_show or arr.shape[1])]
        im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("subcomponent index (matched order)")
        ax.set_ylabel(input_label)
        if shown.shape[1] <= 40:
            ax.set_xticks(range(shown.shape[1]))
            ax.set_xticklabels([str(int(c)) for c in order[: shown.shape[1]]], fontsize=6, rotation=90)
        if shown.shape[0] <= 40:
            ax.set_yticks(range(shown.shape[0]))
            ax.tick_params(axis="y", labelsize=6)
    fig.colorbar(im, ax=list(axes.flat), shrink=0.85, label="causal importance g")
    fig.suptitle(title, fontsize=10)
    return fig


def sweep_summary(
    coefficients: Sequence[float], n_alive: Sequence[float], recon: Sequence[float],
    label: str = "", title: str = "Importance-minimality coefficient sweep", expected: float | None = None,
) -> Figure:
    """Alive subcomponents and final stochastic reconstruction loss against the coefficient.

    Args:
        coefficients: importance-minimality coefficients (log x axis).
        n_alive: alive subcomponents per run (one layer).
        recon: final stochastic reconstruction loss per run.
        expected: the ground-truth number of mechanisms, drawn as a dotted line.
    """
    c = check_array("coefficients", coefficients, ndim=1)
    a = check_array("n_alive", n_alive, ndim=1)
    r = check_array("recon", recon, ndim=1)
    if not (c.size == a.size == r.size) or c.size == 0:
        raise ValueError(f"coefficients, n_alive, recon: expected equal non-zero lengths, got {c.size}, {a.size}, {r.size}")
    if (c <= 0).any():
        raise ValueError("coefficients: expected positive values for the log axis")
    o = np.argsort(c)
    fig, ax = plt.subplots(figsize=(5.6, 3.3))
    ax.semilogx(c[o], a[o], "o-", color="C0")
    if expected is not None:
        ax.axhline(float(expected), color="C0", ls=":", lw=1, label=f"ground truth ({expected:g})")
        ax.legend(fontsize=8, loc="center left")
    ax.set_xlabel("importance-minimality coefficient")
    ax.set_ylabel("alive subcomponents" + (f" ({label})" if label else ""), color="C0")
    ax2 = ax.twinx()
    ax2.semilogy(c[o], np.maximum(r[o], 1e-12), "s--", color="C3")
    ax2.set_ylabel("stochastic recon loss (log)", color="C3")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def subcomponent_card(
    weight: Any, ci_over_inputs: Any, output_kept: Any, output_target: Any, input_index: int,
    title: str = "", output_all: Any | None = None,
) -> Figure:
    """Three panels about one subcomponent: its rank-one weight, its causal importance on each
    one-hot input, and the model output on one input when only it is kept.

    Args:
        weight: ``(d_out, d_in)`` rank-one matrix ``U_c V_c^T``.
        ci_over_inputs: ``(n_inputs,)`` its causal importance on each one-hot input.
        output_kept: ``(n_out,)`` model output on input ``input_index`` with only this subcomponent kept.
        output_target: ``(n_out,)`` the target model's output on the same input.
        input_index: which one-hot input the outputs are for.
        output_all: optional ``(n_out,)`` output with all subcomponents kept (``U V^T`` model).
    """
    w = check_array("weight", weight, ndim=2)
    ci = check_array("ci_over_inputs", ci_over_inputs, ndim=1)
    ok = check_array("output_kept", output_kept, ndim=1)
    ot = check_array("output_target", output_target, ndim=1)
    if ok.shape != ot.shape:
        raise ValueError(f"output_kept, output_target: expected equal shapes, got {ok.shape} and {ot.shape}")
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.0))
    vmax = np.abs(w).max() or 1.0
    im = axes[0].imshow(w, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    _int_ticks(axes[0], *w.shape)
    axes[0].set_title("weight U_c V_c^T", fontsize=9)
    axes[0].set_xlabel("input j")
    axes[0].set_ylabel("output i")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    axes[1].bar(np.arange(ci.size), ci, color="C0")
    axes[1].axhline(0.1, color="0.5", ls=":", lw=1)
    axes[1].set_ylim(min(0.0, ci.min()) - 0.02, 1.05)
    axes[1].set_xlabel("one-hot input feature")
    axes[1].set_ylabel("causal importance")
    axes[1].set_title("causal importance per input (dotted: alive threshold)", fontsize=9)
    k = np.arange(ok.size)
    width = 0.28 if output_all is not None else 0.4
    axes[2].bar(k - width, ot, width, label="target", color="0.6")
    axes[2].bar(k, ok, width, label="only this kept", color="C1")
    if output_all is not None:
        oa = check_array("output_all", output_all, ndim=1)
        axes[2].bar(k + width, oa, width, label="all subcomponents", color="C2")
    axes[2].set_xlabel("output feature")
    axes[2].set_ylabel("output")
    axes[2].set_title(f"output on one-hot input {int(input_index)}", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def hard_sigmoids(x: Any, lower: Any, upper: Any, title: str = "The two leaky hard sigmoids of SPD") -> Figure:
    """The lower-leaky (masks) and upper-leaky (importance minimality) hard sigmoids on ``x``."""
    x = check_array("x", x, ndim=1)
    lo = check_array("lower", lower, ndim=1)
    up = check_array("upper", upper, ndim=1)
    if not (x.shape == lo.shape == up.shape):
        raise ValueError(f"x, lower, upper: expected equal shapes, got {x.shape}, {lo.shape}, {up.shape}")
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    ax.plot(x, lo, label="lower-leaky: masks / reconstruction", lw=2)
    ax.plot(x, up, "--", label="upper-leaky: importance minimality", lw=2)
    ax.set_xlabel("CI function output Gamma(V^T a)")
    ax.set_ylabel("causal importance g")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
