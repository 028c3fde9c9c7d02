"""Figures for notebook 06 (the learning coefficient over training): arrays in, ``Figure`` out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["llc_over_training", "layer_llc_over_training", "calibration_heatmap", "llc_traces", "essential_dynamics"]


def llc_over_training(steps: Any, llc: Any, *, llc_std: Any = None, train_loss: Any = None, test_loss: Any = None,
                      loss_steps: Any = None, reference: Any = None, reference_label: str = "Aoyagi's λ (rank learned)",
                      marks: Sequence[float] = (), mark_label: str = "transition",
                      title: str = "LLC over training") -> Figure:
    """LLC estimate ``(K,)`` at ``steps (K,)`` (± ``llc_std``) with optional losses on a log-scale twin axis.

    ``train_loss`` / ``test_loss`` are drawn at ``loss_steps`` (default ``steps``); ``reference``
    ``(K,)`` (e.g. Aoyagi's λ for the rank learned so far) as a dashed step line; ``marks``:
    vertical lines (e.g. the grokking transition).
    """
    steps, llc = np.asarray(steps, float), np.asarray(llc, float)
    fig, ax = plt.subplots(figsize=(7.5, 4), constrained_layout=True)
    ax.plot(steps, llc, "o-", color="C0", ms=3, label="LLC estimate")
    if llc_std is not None:
        sd = np.asarray(llc_std, float)
        ax.fill_between(steps, llc - sd, llc + sd, color="C0", alpha=0.2, lw=0)
    if reference is not None:
        ax.step(steps, np.asarray(reference, float), where="post", ls="--", color="k", lw=1, label=reference_label)
    ax.set_xlabel("training step")
    ax.set_ylabel("LLC λ̂", color="C0")
    handles, labels = ax.get_legend_handles_labels()
    if train_loss is not None or test_loss is not None:
        ax2 = ax.twinx()
        ls = steps if loss_steps is None else np.asarray(loss_steps, float)
        for loss, name, color in ((train_loss, "train loss", "C1"), (test_loss, "test loss", "C2")):
            if loss is not None:
                ax2.plot(ls, np.maximum(np.asarray(loss, float), 1e-12), color=color, lw=1.2, label=name)
        ax2.set_yscale("log")
        ax2.set_ylabel("loss")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    for i, m in enumerate(marks):
        ax.axvline(m, color="0.4", ls=":", lw=1.2, label=mark_label if i == 0 else None)
    if marks:
        h, l = ax.get_legend_handles_labels()
        handles, labels = handles + h[-1:], labels + l[-1:]
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title(title)
    return fig


def layer_llc_over_training(steps: Any, layer_llc: Mapping[str, Any], *, full: Any = None, full_steps: Any = None,
                            marks: Sequence[float] = (), mark_label: str = "transition", logy: bool = False,
                            ylabel: str = "restricted LLC",
                            title: str = "Weight-restricted LLC per layer over training") -> Figure:
    """Each layer's weight-restricted LLC ``layer_llc[name] (K,)`` at ``steps (K,)``.

    ``full (K',)`` at ``full_steps`` (default ``steps``): the whole network's LLC, dashed, for
    comparison; ``marks``: vertical lines (e.g. a transition); ``logy``: a log-scale LLC axis
    (non-positive values are not drawn). Without ``logy`` the axis
    starts at ``min(0, 20th percentile of full)``, so a very negative early estimate does not
    squash the rest. Any ``{label: (K,) values}`` works (e.g. the LLC of two runs, with ``ylabel``).
    """
    st = np.asarray(steps, float)
    if not isinstance(layer_llc, Mapping) or not layer_llc:
        raise ValueError(f"layer_llc: expected a non-empty mapping name -> (K,) values, got {type(layer_llc).__name__}")
    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    for name, v in layer_llc.items():
        v = np.asarray(v, float)
        if v.shape != st.shape:
            raise ValueError(f"layer_llc[{name!r}]: expected shape {st.shape} (one value per step), got {v.shape}")
        ax.plot(st, v, "o-", ms=3, label=name)
    if full is not None:
        f = np.asarray(full, float)
        ax.plot(st if full_steps is None else np.asarray(full_steps, float), f, "k--", lw=1, label="all weights")
    for i, m in enumerate(marks):
        ax.axvline(m, color="0.4", ls=":", lw=1.2, label=mark_label if i == 0 else None)
    if logy:
        ax.set_yscale("log")
    elif full is not None:
        ax.set_ylim(bottom=min(0.0, float(np.percentile(np.asarray(full, float), 20))))
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def calibration_heatmap(grid: Any, lrs: Sequence[float], nbetas: Sequence[float], *, ok: Any = None,
                        recommended: tuple[int, int] | None = None, label: str = "LLC estimate",
                        title: str = "Calibration: estimate over step size × nβ") -> Figure:
    """Heatmap of ``grid (len(nbetas), len(lrs))`` with its values written in; ``ok`` (same shape, bool)
    hatches the settings that gave warnings; ``recommended = (i_nbeta, i_lr)`` is boxed."""
    G = np.asarray(grid, float)
    fig, ax = plt.subplots(figsize=(1.3 * len(lrs) + 2.5, 0.8 * len(nbetas) + 2), constrained_layout=True)
    finite = G[np.isfinite(G)]
    vmax = float(np.percentile(np.abs(finite), 95)) if finite.size else 1.0
    im = ax.imshow(np.clip(G, -vmax, vmax), cmap="viridis", aspect="auto", origin="lower")
    for i in range(G.shape[0]):
        for j in range(G.shape[1]):
            txt = "nan" if not np.isfinite(G[i, j]) else f"{G[i, j]:.3g}"
            bad = ok is not None and not bool(np.asarray(ok)[i, j])
            ax.text(j, i, txt + (" ⚠" if bad else ""), ha="center", va="center", fontsize=8,
                    color="w" if not np.isfinite(G[i, j]) or G[i, j] < 0.5 * vmax else "k")
    if recommended is not None:
        i, j = recommended
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    ax.set_xticks(range(len(lrs)), [f"{v:.0e}" for v in lrs])
    ax.set_yticks(range(len(nbetas)), [f"{v:.3g}" for v in nbetas])
    ax.set_xlabel("step size ε (lr)")
    ax.set_ylabel("nβ")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title, fontsize=10)
    return fig


def llc_traces(llc_trace: Any, *, title: str = "LLC trace per chain", burn_in: int = 0) -> Figure:
    """Per-chain ``nβ (L_t - L(w*))`` traces ``(C, D)`` and their mean; flat after burn-in if the chain mixes."""
    T = np.asarray(llc_trace, float)
    fig, ax = plt.subplots(figsize=(6.5, 3.4), constrained_layout=True)
    x = burn_in + np.arange(T.shape[1])
    for c in range(T.shape[0]):
        ax.plot(x, T[c], lw=0.7, alpha=0.6)
    ax.plot(x, T.mean(0), color="k", lw=1.6, label="mean over chains")
    ax.axhline(float(T.mean()), color="k", ls=":", lw=1, label=f"estimate {T.mean():.3g}")
    ax.set_xlabel("draw")
    ax.set_ylabel("nβ (L_t − L(w*))")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def essential_dynamics(projections: Any, steps: Any, turning: Sequence[int] = (), *,
                       explained: Any = None, title: str = "Essential dynamics: outputs over training, top PCs") -> Figure:
    """PC1-PC2 path of ``projections (K, k)`` coloured by ``steps (K,)``, turning points marked; PC coordinates over time."""
    Z, st = np.asarray(projections, float), np.asarray(steps, float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax = axes[0]
    y = Z[:, 1] if Z.shape[1] > 1 else np.zeros(len(Z))
    ax.plot(Z[:, 0], y, color="0.7", lw=1, zorder=1)
    sc = ax.scatter(Z[:, 0], y, c=st, cmap="viridis", s=18, zorder=2)
    t = list(turning)
    if t:
        ax.scatter(Z[t, 0], y[t], marker="*", s=180, c="red", zorder=3, label="turning points")
        ax.legend(fontsize=8)
    ev = None if explained is None else np.asarray(explained, float)
    ax.set_xlabel("PC1" + (f" ({100 * ev[0]:.0f}%)" if ev is not None else ""))
    ax.set_ylabel("PC2" + (f" ({100 * ev[1]:.0f}%)" if ev is not None and len(ev) > 1 else ""))
    fig.colorbar(sc, ax=ax, label="step")
    ax = axes[1]
    for j in range(Z.shape[1]):
        ax.plot(st, Z[:, j], label=f"PC{j + 1}")
    for i in t:
        ax.axvline(st[i], color="red", ls=":", lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("projection")
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig
