"""Figures for circuit discovery and circuit-tuning (notebook 04). Pure: data in, ``Figure`` out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch

from mechnb._checks import check_array, check_choice
from mechnb.circuits import (
    Circuit,
    EdgeScores,
    FaithfulnessCurve,
    Graph,
    NodeRedundancy,
    ROCCurve,
    TuneResult,
    rank_agreement,
)

__all__ = [
    "node_positions",
    "draw_graph",
    "graph_figure",
    "circuit_layout",
    "circuit_figure",
    "circuits_side_by_side",
    "score_agreement",
    "draw_faithfulness",
    "faithfulness_figure",
    "faithfulness_panels",
    "roc_figure",
    "explorer_figure",
    "node_redundancy_figure",
    "tuning_comparison",
    "circuit_evolution",
]

_LETTER_DX = {"q": -0.22, "k": 0.0, "v": 0.22, "": 0.0}
_LETTER_STYLE = {"q": ":", "k": "--", "v": "-", "": "-"}


def node_positions(graph: Graph) -> dict[str, tuple[float, float]]:
    """``(x, y)`` of every node: ``input`` at the bottom, then each layer's heads in a row with its
    MLP above and to the right of them, ``logits`` on top."""
    pos: dict[str, tuple[float, float]] = {}
    H = graph.n_heads
    width = max(H - 1, 1)
    for node in graph.nodes:
        y = graph.node_layer(node)
        if node.startswith("a"):
            h = int(node.split(".h")[1])
            pos[node] = (h * 1.0 - width / 2, 2 * y)
        elif node.startswith("m"):  # MLPs to the right, so skip edges do not run through other nodes
            pos[node] = (width / 2 + 1.0, 2 * y)
        else:
            pos[node] = (0.0, 2 * y)
    return pos


def draw_graph(
    ax: Axes,
    graph: Graph,
    circuit: Circuit | None = None,
    scores: EdgeScores | None = None,
    title: str | None = None,
    show_all: bool = True,
) -> None:
    """Draw ``graph`` on ``ax``: nodes as boxes, edges as lines into the reader's q/k/v slot.

    With ``circuit``: its edges in colour (blue = positive score, red = negative; width ~
    ``|score|``), the rest faint grey (``show_all``) or hidden; nodes outside the circuit greyed.
    Query/key/value inputs of a head are the left/middle/right of its box (dotted/dashed/solid).
    """
    pos = node_positions(graph)
    vals = scores.scores.numpy() if scores is not None else None
    vmax = float(np.abs(vals).max()) if vals is not None and np.abs(vals).max() > 0 else 1.0
    mask = circuit.mask.numpy() if circuit is not None else graph.valid.numpy()
    in_nodes = set(circuit.nodes) if circuit is not None else set(graph.nodes)
    for i, w in enumerate(graph.writers):
        for j, (node, letter) in enumerate(graph.readers):
            if not graph.valid[i, j]:
                continue
            keep = bool(mask[i, j])
            if not keep and not show_all:
                continue
            (x0, y0), (x1, y1) = pos[w], pos[node]
            x1 = x1 + _LETTER_DX[letter]
            if keep and circuit is not None:
                s = vals[i, j] if vals is not None else 1.0
                color = ("C0" if s >= 0 else "C3") if vals is not None else "0.25"
                lw = 0.6 + 3.4 * abs(s) / vmax if vals is not None else 1.5
                ax.plot([x0, x1], [y0 + 0.25, y1 - 0.25], color=color, lw=lw, alpha=0.85,
                        ls=_LETTER_STYLE[letter], zorder=2)
            elif circuit is None:  # the whole graph: every edge visible, styled by the slot it enters
                ax.plot([x0, x1], [y0 + 0.25, y1 - 0.25], color="0.45", lw=0.6, alpha=0.7,
                        ls=_LETTER_STYLE[letter], zorder=1)
            else:
                ax.plot([x0, x1], [y0 + 0.25, y1 - 0.25], color="0.85", lw=0.4, zorder=1)
    for node, (x, y) in pos.items():
        active = node in in_nodes
        ax.text(x, y, node, ha="center", va="center", fontsize=8, zorder=3,
                bbox=dict(boxstyle="round,pad=0.3", fc="#ffe9a8" if active else "white",
                          ec="k" if active else "0.7"), color="k" if active else "0.6")
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(-2.7, 2 * graph.n_layers + 0.7)
    ax.set_xticks([])
    ax.set_yticks([2 * layer for layer in range(-1, graph.n_layers + 1)])
    ax.set_yticklabels(["input"] + [f"layer {layer}" for layer in range(graph.n_layers)] + ["logits"])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title)
    handles = [Line2D([], [], color="C0", label="+ score"), Line2D([], [], color="C3", label="− score")] \
        if (vals is not None and circuit is not None) else []
    handles += [Line2D([], [], color="k", ls=_LETTER_STYLE[c], label=f"into {c}") for c in "qkv"]
    ax.legend(handles=handles, loc="upper left", fontsize=7, frameon=False, ncol=1)


def graph_figure(graph: Graph, circuit: Circuit | None = None, scores: EdgeScores | None = None,
                 title: str | None = None) -> Figure:
    """One graph (or circuit) in its own figure; see :func:`draw_graph`."""
    fig, ax = plt.subplots(figsize=(6.5, 1.6 * graph.n_layers + 3))
    if title is None:
        title = (f"computational graph: {graph.n_nodes} nodes, {graph.n_edges} edges" if circuit is None
                 else f"circuit: {circuit.n_edges} edges, {circuit.n_nodes} nodes")
    draw_graph(ax, graph, circuit, scores, title)
    fig.tight_layout()
    return fig


def circuit_layout(circuit: Circuit) -> dict[str, tuple[float, float]]:
    """``(x, y)`` of the circuit's nodes only: one row per height of :func:`node_positions`
    (``input`` at the bottom, each layer's heads, its MLP above them, ``logits`` on top), the
    nodes of a row evenly spaced and centred, in head order."""
    full = node_positions(circuit.graph)
    rows: dict[float, list[str]] = {}
    for node in circuit.nodes:
        rows.setdefault(full[node][1], []).append(node)
    pos = {}
    for y, nodes in rows.items():
        nodes.sort(key=lambda n: full[n][0])
        for i, node in enumerate(nodes):
            pos[node] = (1.4 * (i - (len(nodes) - 1) / 2), y)
    return pos


def _edge_scores(circuit: Circuit, scores: EdgeScores | Mapping[str, float] | None) -> dict[str, float] | None:
    """A score per circuit edge from an :class:`EdgeScores` of the same graph or ``{edge name: score}``."""
    if scores is None:
        return None
    if isinstance(scores, EdgeScores):
        g, h = scores.graph, circuit.graph
        if g.writers != h.writers or g.readers != h.readers or not bool((g.valid == h.valid).all()):
            raise ValueError(f"scores: expected scores of the circuit's graph {h!r}, got scores of {g!r}")
        every = dict(zip((e.name for e in g.edges), g.edge_vector(scores.scores).tolist()))
        return {e.name: float(every[e.name]) for e in circuit.edges}
    if not isinstance(scores, Mapping):
        raise TypeError(f"scores: expected an EdgeScores or a mapping edge name -> score, got {type(scores).__name__}")
    missing = [e.name for e in circuit.edges if e.name not in scores]
    if missing:
        raise ValueError(f"scores: expected a score for every circuit edge, missing {missing[:3]}"
                         + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
    return {e.name: float(scores[e.name]) for e in circuit.edges}


def circuit_figure(circuit: Circuit, scores: EdgeScores | Mapping[str, float] | None = None, *,
                   title: str | None = None, label_top: int = 0) -> Figure:
    """The circuit alone, for sharing (matplotlib only, no graphviz; ``fig.savefig("c.svg")``).

    Only the circuit's nodes are drawn (:func:`circuit_layout`), each edge an arrow from its
    writer into the reader's query / key / value slot (left / middle / right of the box; dotted /
    dashed / solid). With ``scores`` (an :class:`EdgeScores` of the same graph, or the
    ``{edge name: score}`` that :meth:`Circuit.to_json` writes) an edge is blue for a positive
    score, red for a negative one, its width growing with ``|score|``; ``label_top`` writes the
    score on the ``label_top`` edges of largest ``|score|``. Every arrow carries the edge's name as
    its ``gid`` (an ``id`` in SVG output), every node box ``"node:<name>"``.
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"circuit: expected a Circuit, got {type(circuit).__name__}")
    if isinstance(label_top, bool) or not isinstance(label_top, int) or label_top < 0:
        raise ValueError(f"label_top: expected an int >= 0, got {label_top!r}")
    vals = _edge_scores(circuit, scores)
    pos = circuit_layout(circuit)
    widest = max([sum(1 for p in pos.values() if p[1] == y) for y in {p[1] for p in pos.values()}] or [1])
    n_rows = 2 * circuit.graph.n_layers + 2
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * widest + 2.0), 0.75 * n_rows + 1.5))
    vmax = max([abs(v) for v in (vals or {}).values()] + [0.0]) or 1.0
    labelled = set()
    if vals is not None and label_top:
        labelled = set(sorted(vals, key=lambda k: -abs(vals[k]))[:label_top])
    for e in circuit.edges:
        (x0, y0), (x1, y1) = pos[e.src], pos[e.dst]
        x1 += 0.8 * _LETTER_DX[e.letter]
        s = vals[e.name] if vals is not None else None
        color = "0.3" if s is None else ("C0" if s >= 0 else "C3")
        width = 1.4 if s is None else 0.7 + 3.3 * abs(s) / vmax
        rad = 0.0 if y1 - y0 <= 2 else 0.25 * (1 if x1 >= x0 else -1)  # skip edges bend around the rows between
        arrow = FancyArrowPatch((x0, y0 + 0.28), (x1, y1 - 0.28), arrowstyle="-|>", mutation_scale=9,
                                connectionstyle=f"arc3,rad={rad}", color=color, lw=width, ls=_LETTER_STYLE[e.letter],
                                alpha=0.85, zorder=2)
        arrow.set_gid(e.name)
        ax.add_patch(arrow)
        if e.name in labelled:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"{s:+.2g}", fontsize=7, color=color, ha="center", va="center",
                    zorder=4, bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    for node, (x, y) in pos.items():
        box = ax.text(x, y, node, ha="center", va="center", fontsize=8, zorder=3,
                      bbox=dict(boxstyle="round,pad=0.3", fc="#ffe9a8", ec="k"))
        box.set_gid(f"node:{node}")
    if not pos:
        ax.text(0.5, 0.5, "empty circuit (no edges)", ha="center", va="center", transform=ax.transAxes)
    xs = [p[0] for p in pos.values()] or [0.0]
    ax.set_xlim(min(xs) - 1.0, max(xs) + 1.0)
    ax.set_ylim(-2.7, 2 * circuit.graph.n_layers + 0.7)
    ax.set_xticks([])
    ax.set_yticks([2 * layer for layer in range(-1, circuit.graph.n_layers + 1)])
    ax.set_yticklabels(["input"] + [f"layer {layer}" for layer in range(circuit.graph.n_layers)] + ["logits"])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title if title is not None else f"circuit: {circuit.n_edges} edges, {circuit.n_nodes} nodes")
    handles = [Line2D([], [], color="C0", label="+ score"), Line2D([], [], color="C3", label="− score")] \
        if vals is not None else []
    handles += [Line2D([], [], color="k", ls=_LETTER_STYLE[c], label=f"into {c}") for c in "qkv"]
    ax.legend(handles=handles, loc="upper left", fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def circuits_side_by_side(graph: Graph, circuits: Sequence[Circuit], titles: Sequence[str],
                          scores: Sequence[EdgeScores | None] | None = None, suptitle: str | None = None) -> Figure:
    """Several circuits of the same graph next to each other (e.g. before / during / after tuning)."""
    if len(circuits) != len(titles) or not circuits:
        raise ValueError(f"titles: expected one title per circuit ({len(circuits)}), got {len(titles)}")
    scores = list(scores) if scores is not None else [None] * len(circuits)
    fig, axes = plt.subplots(1, len(circuits), figsize=(4.6 * len(circuits), 1.6 * graph.n_layers + 3))
    axes = np.atleast_1d(axes)
    for ax, c, t, s in zip(axes, circuits, titles, scores):
        draw_graph(ax, graph, c, s, f"{t}\n{c.n_edges} edges, {c.n_nodes} nodes", show_all=False)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def score_agreement(methods: Mapping[str, EdgeScores], reference: EdgeScores, k: int = 20,
                    title: str = "edge scores against exact patching", symlog: bool = True) -> Figure:
    """Scatter of each method's edge scores against ``reference`` (exact), with the diagonal,
    Spearman rank correlation and top-``k`` overlap in each panel (``symlog``: symmetric-log axes,
    linear within 1% of the largest score)."""
    if not methods:
        raise ValueError("methods: expected at least one EdgeScores, got none")
    fig, axes = plt.subplots(1, len(methods), figsize=(4.3 * len(methods), 4.0), squeeze=False)
    ref = reference.values.numpy()
    top_ref = np.argsort(-np.abs(ref), kind="stable")[:k]
    for ax, (name, sc) in zip(axes[0], methods.items()):
        v = sc.values.numpy()
        agree = rank_agreement(sc, reference, k)
        ax.scatter(ref, v, s=12, alpha=0.6, color="C0", label="edge")
        ax.scatter(ref[top_ref], v[top_ref], s=22, facecolors="none", edgecolors="C3", label=f"exact top {k}")
        lim = 1.3 * max(np.abs(ref).max(), np.abs(v).max(), 1e-9)
        diag = np.linspace(-lim, lim, 401)
        ax.plot(diag, diag, color="0.5", lw=0.8, ls="--")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        if symlog:  # most edges matter little: a linear scale near 0, logarithmic beyond
            ax.set_xscale("symlog", linthresh=lim / 100)
            ax.set_yscale("symlog", linthresh=lim / 100)
        ax.set_xlabel(f"{reference.method} score (Δ metric when the edge is patched)")
        ax.set_ylabel(f"{name} score")
        ax.set_title(f"{name}: Spearman ρ = {agree['spearman']:.2f}, top-{k} overlap {agree['top_k_overlap']:.0%}",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def draw_faithfulness(ax: Axes, curves: Mapping[str, FaithfulnessCurve], mark: int | None = None,
                      title: str | None = None, x: str = "edges", show_area: bool = False) -> None:
    """Faithfulness against circuit size on ``ax``, one line per curve.

    ``x="edges"``: the number of circuit edges after pruning, log scale; ``x="fraction"``: the
    fraction of the graph's edges kept, linear - the axis :attr:`FaithfulnessCurve.area` integrates
    over. ``show_area`` puts each curve's area in its label.
    """
    check_choice("x", x, ["edges", "fraction"])
    for i, (name, c) in enumerate(curves.items()):
        label = f"{name} (area {c.area:.2f})" if show_area else name
        if x == "edges":
            ax.plot(np.maximum(c.n_edges, 0.8), c.faithfulness, marker="o", ms=3, color=f"C{i}", label=label)
        else:
            fx, ff = c.points()
            ax.plot(fx, ff, marker="o", ms=2.5, color=f"C{i}", label=label, lw=1.2)
    ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
    ax.axhline(0.0, color="0.5", lw=0.8)
    if mark is not None and x == "edges":
        ax.axvline(max(mark, 0.8), color="k", lw=0.8, ls=":", label=f"{mark} edges")
    if x == "edges":
        ax.set_xscale("log")
        ax.set_xlabel("edges in circuit (log scale)")
    else:
        ax.set_xlim(0, 1)
        ax.set_xlabel("fraction of edges kept")
    ax.set_ylabel("faithfulness  (m(C) − m(∅)) / (m(G) − m(∅))")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)


def faithfulness_figure(curves: Mapping[str, FaithfulnessCurve], mark: int | None = None,
                        title: str = "faithfulness as edges are added", x: str = "edges",
                        show_area: bool = False) -> Figure:
    """Faithfulness against circuit size, one line per curve (see :func:`draw_faithfulness`);
    ``mark`` draws a vertical line at that circuit size."""
    if not curves:
        raise ValueError("curves: expected at least one FaithfulnessCurve, got none")
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    draw_faithfulness(ax, curves, mark, title, x=x, show_area=show_area)
    fig.tight_layout()
    return fig


def faithfulness_panels(curves: Mapping[str, Mapping[str, FaithfulnessCurve]], x: str = "fraction",
                        title: str = "faithfulness curves under each ablation") -> Figure:
    """``curves[ablation][method]``: one panel per ablation with every method's curve and its area
    (the area of :attr:`FaithfulnessCurve.area`, MIB's CPR) in the legend."""
    if not curves or not all(curves.values()):
        raise ValueError("curves: expected {ablation: {method: FaithfulnessCurve}} with at least one curve each")
    fig, axes = plt.subplots(1, len(curves), figsize=(4.4 * len(curves), 3.9), squeeze=False, sharey=True)
    lo = min(min(min(c.faithfulness) for c in row.values()) for row in curves.values())
    hi = max(max(max(c.faithfulness) for c in row.values()) for row in curves.values())
    for ax, (ablation, row) in zip(axes[0], curves.items()):
        draw_faithfulness(ax, row, title=f"ablation: {ablation}", x=x, show_area=True)
        ax.set_ylim(min(lo, 0.0) - 0.05, max(hi, 1.0) + 0.05)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def roc_figure(rocs: Mapping[str, ROCCurve], title: str = "recovering the planted circuit") -> Figure:
    """ROC curves of several rankings against the same true edges, with their AUC in the legend
    and the diagonal of a random ranking."""
    if not rocs:
        raise ValueError("rocs: expected at least one ROCCurve, got none")
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for i, (name, r) in enumerate(rocs.items()):
        ax.step(r.fpr, r.tpr, where="post", color=f"C{i}", lw=1.5, label=f"{name} (AUC {r.auc:.2f})")
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--", label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.02)
    first = next(iter(rocs.values()))
    ax.set_xlabel(f"false positive rate ({first.n_false} other edges)")
    ax.set_ylabel(f"true positive rate ({first.n_true} planted edges)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def explorer_figure(graph: Graph, circuit: Circuit, scores: EdgeScores, curve: FaithfulnessCurve, label: str,
                    faithfulness: float) -> Figure:
    """The circuit explorer's view: the circuit drawn (left) and the faithfulness curve with the
    current size marked (right)."""
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11.5, 1.6 * graph.n_layers + 3),
                                 gridspec_kw=dict(width_ratios=[1.3, 1]))
    draw_graph(a0, graph, circuit, scores, f"{label}: {circuit.n_edges} edges, {circuit.n_nodes} nodes",
               show_all=True)
    draw_faithfulness(a1, {label: curve}, mark=circuit.n_edges, title=f"faithfulness here: {faithfulness:.3f}")
    a1.plot([max(circuit.n_edges, 0.8)], [faithfulness], marker="*", ms=12, color="k")
    fig.tight_layout()
    return fig


def node_redundancy_figure(nr: NodeRedundancy, tol: float = 0.1,
                           title: str = "node redundancy: how many edges does the task need?") -> Figure:
    """Left: final task metric and trainable-parameter fraction against circuit size, saturation
    marked. Right (if recorded): held-out general loss after tuning against circuit size."""
    sizes = np.maximum(np.array(nr.sizes, dtype=float), 0.8)
    has_general = len(nr.general_loss) == len(nr.sizes)
    fig, axes = plt.subplots(1, 2 if has_general else 1, figsize=(11.5 if has_general else 6.0, 3.9), squeeze=False)
    ax = axes[0, 0]
    ax.plot(sizes, nr.final_metric, marker="o", color="C0", label=f"{nr.primary} after tuning")
    ax.axhline(nr.base_metric, color="C0", lw=0.8, ls=":", label=f"{nr.primary} before tuning")
    ax.set_xscale("log")
    ax.set_xlabel("circuit size top_n (edges, log scale)")
    ax.set_ylabel(nr.primary, color="C0")
    ax2 = ax.twinx()
    ax2.plot(sizes, nr.trainable_fraction, marker="s", color="C1", label="fraction of parameters trainable")
    ax2.set_ylabel("fraction of parameters trainable", color="C1")
    ax2.set_ylim(0, 1.02)
    sat = nr.saturation_point(tol)
    if sat is not None:
        ax.axvline(max(sat, 0.8), color="k", ls="--", lw=1,
                   label=f"saturation ({1 - tol:.0%} of best gain): {sat} edges")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="center right")
    ax.set_title("task metric and trainable parameters")
    if has_general:
        a1 = axes[0, 1]
        a1.plot(sizes, nr.general_loss, marker="o", color="C2", label="after tuning")
        a1.axhline(nr.base_general_loss, color="C2", lw=0.8, ls=":", label="before tuning")
        a1.set_xscale("log")
        a1.set_xlabel("circuit size top_n (edges, log scale)")
        a1.set_ylabel("held-out general loss (nats / token)")
        a1.set_title("capability cost")
        a1.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def tuning_comparison(results: Mapping[str, Mapping[str, TuneResult]],
                      title: str = "circuit-tuning vs full fine-tuning vs LoRA") -> Figure:
    """``results[task][method]``: per task a row with (1) the task metric and (2) the held-out general
    loss against step, (3) the trade-off between them along training (each point a logged step,
    arrows point forward in time) and (4) the fraction of parameters trained."""
    if not results:
        raise ValueError("results: expected {task: {method: TuneResult}}, got nothing")
    fig, axes = plt.subplots(len(results), 4, figsize=(17, 3.6 * len(results)), squeeze=False)
    for row, (task, runs) in zip(axes, results.items()):
        for i, (method, r) in enumerate(runs.items()):
            s, v = r.series(r.primary)
            _, g = r.series("general_loss")
            row[0].plot(s, v, marker=".", color=f"C{i}", label=method)
            row[1].plot(s, g, marker=".", color=f"C{i}", label=method)
            row[2].plot(v, g, marker=".", color=f"C{i}", label=method, alpha=0.8)
            if len(v) > 1:
                row[2].annotate("", xy=(v[-1], g[-1]), xytext=(v[-2], g[-2]),
                                arrowprops=dict(arrowstyle="-|>", color=f"C{i}"))
        primary = next(iter(runs.values())).primary
        row[0].set_xlabel("step")
        row[0].set_ylabel(primary)
        row[0].set_title(f"{task}: task metric ({primary})")
        row[1].set_xlabel("step")
        row[1].set_ylabel("held-out loss (nats / token)")
        row[1].set_title(f"{task}: general loss (capability)")
        row[2].set_xlabel(primary)
        row[2].set_ylabel("held-out loss (nats / token)")
        row[2].set_title(f"{task}: task metric vs capability cost")
        names = list(runs)
        fr = [runs[m].mean_trainable_fraction() for m in names]
        row[3].bar(np.arange(len(names)), fr, color=[f"C{i}" for i in range(len(names))])
        row[3].set_xticks(np.arange(len(names)))
        row[3].set_xticklabels(names)
        row[3].set_ylabel("fraction of parameters trained")
        row[3].set_ylim(0, 1.05)
        row[3].set_title(f"{task}: parameters updated")
        row[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def circuit_evolution(steps: Sequence[int], n_edges: Sequence[int], n_nodes: Sequence[int],
                      edge_overlap: Sequence[float], node_overlap: Sequence[float],
                      title: str = "the circuit during circuit-tuning") -> Figure:
    """Circuit size (edges, nodes) and its overlap (IoU) with the initial circuit at each re-discovery."""
    s = check_array("steps", steps, ndim=1)
    for name, arr in [("n_edges", n_edges), ("n_nodes", n_nodes), ("edge_overlap", edge_overlap),
                      ("node_overlap", node_overlap)]:
        if len(arr) != len(s):
            raise ValueError(f"{name}: expected {len(s)} values (one per step), got {len(arr)}")
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6))
    a0.plot(s, n_edges, marker="o", label="edges")
    a0.plot(s, n_nodes, marker="s", label="nodes")
    a0.set_xlabel("step")
    a0.set_ylabel("count")
    a0.set_title("circuit size")
    a0.legend(fontsize=8)
    a1.plot(s, edge_overlap, marker="o", label="edges")
    a1.plot(s, node_overlap, marker="s", label="nodes")
    a1.set_ylim(-0.02, 1.02)
    a1.set_xlabel("step")
    a1.set_ylabel("IoU with the circuit at step 0")
    a1.set_title("overlap with the initial circuit")
    a1.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
