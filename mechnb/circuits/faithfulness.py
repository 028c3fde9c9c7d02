"""Faithfulness of circuits, faithfulness curves and their normalised area.

:func:`faithfulness` is ``F(C) = (m(C) - m(empty)) / (m(full) - m(empty))`` with every edge outside
the circuit patched towards the ablation's reference (Wang et al. 2023; Hanna et al. 2024 Sec. 4;
the ablations of :mod:`.ablation`). ``F`` is 1 for the full graph and 0 for the empty circuit.

:func:`faithfulness_curve` measures ``F`` of the top-``n`` circuits of a ranking for many ``n``;
:attr:`FaithfulnessCurve.area` integrates it over circuit size as the circuit track of the MIB
benchmark does (Mueller et al. 2025, arXiv:2504.13151, CPR), and :attr:`FaithfulnessCurve.cmd` the
area between the curve and 1 (their CMD). See :attr:`FaithfulnessCurve.area` for the exact rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mechnb._checks import check_positive_int
from mechnb._torch import eval_mode
from mechnb.circuits.ablation import check_ablation, needs_corrupted, reference_from_cache
from mechnb.circuits.circuit import Circuit, EdgeScores
from mechnb.circuits.graph import Graph, cache_writers, patched_forward, patched_logits
from mechnb.circuits.metric import Metric, bind_metric, check_metric, logit_diff, metric_float, resolve_prompts
from mechnb.models import TinyTransformer
from mechnb.tasks import PromptPairs

__all__ = ["faithfulness", "faithfulness_curve", "FaithfulnessCurve", "separation_tolerance", "area_table"]


def separation_tolerance(dtype: torch.dtype) -> float:
    """Relative size below which ``m(full) - m(empty)`` is float noise: ``1000 * eps`` of ``dtype``
    (1.2e-4 in float32, 2.2e-13 in float64), at most 1e-2."""
    return min(1e3 * torch.finfo(dtype).eps, 1e-2)


def faithfulness(
    model: TinyTransformer,
    circuit: Circuit,
    clean: torch.Tensor | PromptPairs,
    corrupted: torch.Tensor | None = None,
    metric: Metric = logit_diff,
    ablation: str = "corrupted",
) -> float:
    """``(m(circuit) - m(empty)) / (m(full) - m(empty))`` with every edge outside ``circuit`` patched.

    ``ablation``: what a patched edge carries (:mod:`~mechnb.circuits.ablation`): the writer's
    output on the corrupted prompt (``"corrupted"``), zero (``"zero"``), or its mean over the clean
    prompts - over prompts and positions (``"mean"``) or per position (``"mean-positional"``);
    only ``"corrupted"`` needs ``corrupted``. ``m(full)`` is the unpatched model, ``m(empty)`` the
    model with every edge patched. Equals 1 for the full circuit and 0 for the empty one.

    Raises ``ValueError`` naming ``metric`` if ``|m(full) - m(empty)|`` is at most
    :func:`separation_tolerance` times ``max(|m(full)|, |m(empty)|)``: then the metric does not
    separate the full and the empty circuit and the ratio would be float noise (its sign flipping
    from run to run).
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"circuit: expected a Circuit, got {type(circuit).__name__}")
    graph = circuit.graph
    graph.check_model(model)
    check_metric(metric)
    check_ablation(ablation)
    clean_t, corr_t, batch = resolve_prompts(clean, corrupted, model, need_corrupted=needs_corrupted(ablation))
    return _faithfulness_values(model, graph, clean_t, corr_t, batch, metric, ablation, [circuit.mask])[0]


def _faithfulness_values(model: TinyTransformer, graph: Graph, clean_t: torch.Tensor, corr_t: torch.Tensor | None,
                         batch: Any, metric: Metric, ablation: str, masks: list[torch.Tensor]) -> list[float]:
    """``F`` of each circuit mask: the reference, ``m(full)`` and ``m(empty)`` once, then one patched
    forward pass per mask."""
    m = bind_metric(metric, batch)
    with eval_mode(model), torch.no_grad():
        clean_cache = cache_writers(model, graph, clean_t)
        corr_cache = cache_writers(model, graph, corr_t) if ablation == "corrupted" and corr_t is not None else None
        ref = reference_from_cache(clean_cache, corr_cache, ablation)
        valid = graph.valid.to(ref)
        m_full = metric_float(m, clean_cache.logits, "on the clean prompts (the full circuit)")
        m_empty = metric_float(m, patched_forward(model, graph, clean_t, ref, valid),
                               f"with every edge {ablation}-ablated (the empty circuit)")
        tol = separation_tolerance(ref.dtype) * max(abs(m_full), abs(m_empty))
        if abs(m_full - m_empty) <= tol:
            raise ValueError(
                f"metric: does not separate the full and the empty circuit under ablation={ablation!r} "
                f"(m(full) = {m_full:.6g}, m(empty) = {m_empty:.6g}, difference {m_full - m_empty:.3g} is within "
                f"float noise); faithfulness (m(C) - m(empty)) / (m(full) - m(empty)) is undefined - use prompts or "
                f"an ablation on which the metric changes")
        out = []
        for mask in masks:
            alpha = valid * (~mask.to(ref.device)).to(ref.dtype)
            value = metric_float(m, patched_logits(model, graph, clean_t, ref, alpha), "on the circuit")
            out.append((value - m_empty) / (m_full - m_empty))
    return out


@dataclass
class FaithfulnessCurve:
    """Faithfulness of the top-``n`` circuits: ``sizes`` requested, ``n_edges`` kept after pruning.

    ``n_total`` is the number of edges of the graph; ``method`` the ranking's method.
    """

    sizes: list[int]
    n_edges: list[int]
    n_nodes: list[int]
    faithfulness: list[float]
    ablation: str
    n_total: int = 0
    method: str = ""

    def smallest_faithful(self, level: float = 0.9) -> int | None:
        """Smallest requested size whose faithfulness is at least ``level`` (``None`` if none)."""
        for s, f in zip(self.sizes, self.faithfulness):
            if f >= level:
                return s
        return None

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, F)``: the fraction of edges kept after pruning and faithfulness, sorted by ``x``, with
        ``(0, 0)`` and ``(1, 1)`` added when the curve lacks them (F of the empty and full circuits)."""
        if self.n_total <= 0:
            raise ValueError("n_total: expected the graph's edge count (> 0) to normalise the area, got "
                             f"{self.n_total}")
        x = np.asarray(self.n_edges, dtype=float) / self.n_total
        f = np.asarray(self.faithfulness, dtype=float)
        if not np.any(x == 0.0):
            x, f = np.append(x, 0.0), np.append(f, 0.0)
        if not np.any(x == 1.0):
            x, f = np.append(x, 1.0), np.append(f, 1.0)
        order = np.argsort(x, kind="stable")
        return x[order], f[order]

    @property
    def area(self) -> float:
        """Normalised area under faithfulness against the fraction of edges kept (MIB's CPR).

        Exact rule: the points are ``(x_i, F_i)`` with ``x_i = n_edges_i / n_total`` the fraction of
        the graph's edges in the *pruned* top-``n`` circuit (not the requested size), plus ``(0, 0)``
        and ``(1, 1)`` if absent; the area is the trapezoidal integral ``sum_i (x_{i+1} - x_i)
        (F_i + F_{i+1}) / 2`` over ``x`` in ``[0, 1]`` (points with equal ``x`` are the same circuit).
        The x-axis has length 1, so the area is a mean faithfulness over circuit sizes: a ranking
        whose circuits were fully faithful from the first edge on would approach 1, and a random
        ranking (:meth:`EdgeScores.random`) is the baseline to compare with. MIB integrates over
        its fixed grid of circuit sizes (0.1% .. 100% of the edges); we integrate over the sizes the
        curve was measured at, so compare areas of curves measured at the same ``sizes``.
        """
        x, f = self.points()
        return float(np.sum(np.diff(x) * (f[1:] + f[:-1]) / 2))

    @property
    def cmd(self) -> float:
        """Normalised area between the curve and 1, ``integral |1 - F| dx`` by the same trapezoidal rule
        as :attr:`area` (MIB's CMD; 0 is best). Equals ``1 - area`` when ``F <= 1`` everywhere."""
        x, f = self.points()
        g = np.abs(1.0 - f)
        return float(np.sum(np.diff(x) * (g[1:] + g[:-1]) / 2))


def default_sizes(n_edges: int) -> list[int]:
    """The default circuit sizes of :func:`faithfulness_curve`: 0 and ~24 log-spaced sizes up to ``n_edges``."""
    return sorted(set(np.unique(np.geomspace(1, n_edges, 24).round().astype(int)).tolist()) | {0})


def faithfulness_curve(
    model: TinyTransformer,
    scores: EdgeScores,
    clean: torch.Tensor | PromptPairs,
    corrupted: torch.Tensor | None = None,
    metric: Metric = logit_diff,
    sizes: Sequence[int] | None = None,
    ablation: str = "corrupted",
) -> FaithfulnessCurve:
    """Faithfulness of ``scores.top_n(n)`` for each ``n`` in ``sizes`` (default :func:`default_sizes`).

    The reference activations and ``m(full)``, ``m(empty)`` are computed once; each size costs one
    patched forward pass. The curve's :attr:`~FaithfulnessCurve.area` is the normalised area under it.
    """
    if not isinstance(scores, EdgeScores):
        raise TypeError(f"scores: expected an EdgeScores (from attribute or EdgeScores.random), got "
                        f"{type(scores).__name__}")
    graph = scores.graph
    graph.check_model(model)
    check_metric(metric)
    check_ablation(ablation)
    if sizes is None:
        sizes = default_sizes(graph.n_edges)
    sizes = [check_positive_int(f"sizes[{i}]", s, minimum=0) for i, s in enumerate(sizes)]
    clean_t, corr_t, batch = resolve_prompts(clean, corrupted, model, need_corrupted=needs_corrupted(ablation))
    circuits = [scores.top_n(s) for s in sizes]
    vals = _faithfulness_values(model, graph, clean_t, corr_t, batch, metric, ablation, [c.mask for c in circuits])
    return FaithfulnessCurve(list(sizes), [c.n_edges for c in circuits], [c.n_nodes for c in circuits], vals,
                             ablation, graph.n_edges, scores.method)


def area_table(curves: dict[str, dict[str, FaithfulnessCurve]], digits: int = 3) -> str:
    """A plain-text table of :attr:`FaithfulnessCurve.area` for ``curves[method][ablation]``: one row
    per method, one column per ablation (blank where a curve is missing)."""
    if not curves or not all(isinstance(v, dict) for v in curves.values()):
        raise ValueError("curves: expected {method: {ablation: FaithfulnessCurve}}, got "
                         f"{type(curves).__name__}")
    ablations = list(dict.fromkeys(a for row in curves.values() for a in row))
    rows = [["method", *ablations]]
    for method, row in curves.items():
        rows.append([method, *(f"{row[a].area:.{digits}f}" if a in row else "" for a in ablations)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
