"""Figures for the model-zoo tour (notebook 00). Pure: arrays in, ``Figure`` out."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from mechnb._checks import check_array

__all__ = ["tms_geometry", "training_curves", "pronoun_bias", "agreement_accuracy", "weight_heatmap"]


def tms_geometry(W: np.ndarray, title: str = "TMS feature directions") -> Figure:
    """Feature directions of a TMS model.

    Args:
        W: ``(n_hidden, n_features)`` - ``linear1.weight``; column ``i`` is where feature ``i`` is
            written. With ``n_hidden == 2`` the columns are drawn as arrows in the plane (the
            regular pentagon of ``tms-5-2``); otherwise the ``WᵀW`` Gram matrix and the
            column norms are shown (superposition = off-diagonal interference).
    """
    W = check_array("W", W, ndim=2)
    n_hidden, n_feat = W.shape
    colors = plt.cm.tab10(np.arange(n_feat) % 10)
    if n_hidden == 2:
        fig, ax = plt.subplots(figsize=(4.2, 4.2))
        lim = 1.15 * max(1e-6, np.abs(W).max())
        for i in range(n_feat):
            ax.annotate("", xy=(W[0, i], W[1, i]), xytext=(0, 0),
                        arrowprops=dict(arrowstyle="-|>", color=colors[i], lw=2))
            ax.text(1.08 * W[0, i], 1.08 * W[1, i], f"f{i}", color=colors[i], ha="center", va="center")
        ax.plot(*np.c_[W[:, np.argsort(np.arctan2(W[1], W[0]))], W[:, np.argsort(np.arctan2(W[1], W[0]))[:1]]],
                ls=":", color="grey", lw=1)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_xlabel("hidden dimension 0")
        ax.set_ylabel("hidden dimension 1")
        ax.set_title(title)
    else:
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.8), gridspec_kw=dict(width_ratios=[1.2, 1]))
        G = W.T @ W
        v = np.abs(G).max()
        im = ax0.imshow(G, cmap="RdBu_r", vmin=-v, vmax=v)
        ax0.set_xlabel("feature j")
        ax0.set_ylabel("feature i")
        ax0.set_title(r"$W^\top W$ (diagonal: norms², off-diagonal: interference)")
        fig.colorbar(im, ax=ax0, fraction=0.046)
        ax1.bar(np.arange(n_feat), np.linalg.norm(W, axis=0), color="C0")
        ax1.set_xlabel("feature")
        ax1.set_ylabel(r"$\|W_{:,i}\|$")
        ax1.set_title("feature norms (≈1: represented)")
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves(
    steps: Sequence[float], curves: dict[str, Sequence[float]], ylabel: str, title: str, logy: bool = False,
) -> Figure:
    """Several named curves against training step (e.g. train / test accuracy)."""
    steps_arr = check_array("steps", steps, ndim=1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, ys in curves.items():
        ys_arr = check_array(f"curves[{label!r}]", ys, ndim=1)
        if ys_arr.shape != steps_arr.shape:
            raise ValueError(f"curves[{label!r}]: expected {steps_arr.shape[0]} values, got {ys_arr.shape[0]}")
        ax.plot(steps_arr, ys_arr, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def pronoun_bias(occupations: Sequence[str], p_she: np.ndarray, stereotype: Sequence[str],
                 corpus_bias: float | None = None) -> Figure:
    """``P(she) / (P(he) + P(she))`` after each occupation, coloured by its corpus stereotype."""
    p = check_array("p_she", p_she, ndim=1)
    if len(occupations) != p.shape[0] or len(stereotype) != p.shape[0]:
        raise ValueError(f"occupations, stereotype: expected {p.shape[0]} entries each, got "
                         f"{len(occupations)} and {len(stereotype)}")
    order = np.argsort(p)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    cols = ["C3" if stereotype[i] == "f" else "C0" for i in order]
    ax.bar(np.arange(len(order)), p[order], color=cols)
    ax.set_xticks(np.arange(len(order)), [occupations[i] for i in order], rotation=70, fontsize=8)
    ax.axhline(0.5, color="k", lw=0.8, ls="--", label="unbiased (0.5)")
    if corpus_bias is not None:
        ax.axhline(corpus_bias, color="C3", lw=0.8, ls=":", label=f"corpus rate, female-stereotyped ({corpus_bias:.2f})")
        ax.axhline(1 - corpus_bias, color="C0", lw=0.8, ls=":", label=f"corpus rate, male-stereotyped ({1 - corpus_bias:.2f})")
    ax.set_ylim(0, 1)
    ax.set_ylabel("P(she) / (P(he) + P(she))")
    ax.set_xlabel("occupation (sorted by P(she))")
    ax.set_title("Pronoun after 'the OCCUPATION ... and': the planted bias (red: female-, blue: male-stereotyped)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def agreement_accuracy(conditions: Sequence[str], accuracy: Sequence[float], title: str = "Agreement accuracy") -> Figure:
    """Bar chart of accuracy per prompt condition (e.g. no attractor / matching / mismatching)."""
    acc = check_array("accuracy", accuracy, ndim=1)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(list(conditions), acc, color=["C2", "C1", "C3", "C4"][: len(acc)])
    for i, a in enumerate(acc):
        ax.text(i, a + 0.01, f"{a:.1%}", ha="center")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy (correct verb form wins)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def weight_heatmap(W: np.ndarray, title: str, xlabel: str = "input", ylabel: str = "output") -> Figure:
    """A weight matrix as a diverging heatmap."""
    W = check_array("W", W, ndim=2)
    fig, ax = plt.subplots(figsize=(5, 4))
    v = max(1e-12, np.abs(W).max())
    im = ax.imshow(W, cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto")
    fig.colorbar(im, ax=ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig
