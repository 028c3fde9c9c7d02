"""Choosing the LLC sampler's settings: a grid over step size × nβ × localization, with diagnostics.

LLC estimates depend on the sampler's step size ``ε``, inverse temperature ``nβ`` and
localization ``γ``; Lau et al. 2023 (Sec. 4 and Appendix) and devinterp's calibration guide
sweep them and keep a setting where the loss trace is flat after burn-in, the estimate is
positive and stable across neighbouring settings, and the MALA acceptance of the proposals is
high but not 1. :func:`calibrate_llc` runs that sweep and applies those rules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from mechnb._checks import check_positive_float
from mechnb.degeneracy.llc import LLCResult, estimate_llc
from mechnb.io import saveable

__all__ = ["LLCCalibration", "calibrate_llc", "recommend"]


@saveable()
@dataclass
class LLCCalibration:
    """Output of :func:`calibrate_llc`.

    Attributes:
        table: one row per setting: ``lr``, ``nbeta``, ``localization``, ``mean``, ``std``,
            ``acceptance`` (mean MALA acceptance; NaN for SGNHT), ``relative_drift`` (of the
            trace, :meth:`LLCResult.stationarity`), ``warnings`` (how many
            :meth:`LLCResult.diagnose` gave) and ``ok`` (none).
        results: the :class:`LLCResult` of every row (traces for plots and widgets).
        recommended: the index of the recommended row (see :func:`calibrate_llc`).
        lrs, nbetas, localizations: the grid's axes.
    """

    table: list[dict[str, Any]]
    results: list[LLCResult]
    recommended: int
    lrs: list[float]
    nbetas: list[float]
    localizations: list[float]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> dict[str, Any]:
        """The recommended row of :attr:`table`."""
        return self.table[self.recommended]

    def grid(self, key: str = "mean", localization: float | None = None) -> np.ndarray:
        """``(len(nbetas), len(lrs))`` array of column ``key`` at one localization (default: the recommended one)."""
        gamma = self.best["localization"] if localization is None else localization
        out = np.full((len(self.nbetas), len(self.lrs)), np.nan)
        for row in self.table:
            if row["localization"] == gamma:
                out[self.nbetas.index(row["nbeta"]), self.lrs.index(row["lr"])] = float(row[key])
        return out

    def __repr__(self) -> str:
        b = self.best
        return (f"LLCCalibration({len(self.table)} settings, recommended lr={b['lr']:g}, nbeta={b['nbeta']:g}, "
                f"localization={b['localization']:g}: {b['mean']:.3g} ± {b['std']:.2g})")


def _axis(name: str, values: Any) -> list[float]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name}: expected a non-empty list of positive numbers, got {values!r}")
    return [check_positive_float(f"{name}[{i}]", v, allow_zero=name == "localizations") for i, v in enumerate(values)]


def recommend(table: Sequence[dict[str, Any]]) -> int:
    """The index of the recommended row of a calibration table (the rule of :func:`calibrate_llc`).

    Rows need ``ok``, ``lr``, ``mean``, ``std``, ``warnings`` and ``relative_drift``. Among the
    ``ok`` rows: the largest ``lr``, then the smallest ``std / |mean|``; with no ``ok`` row: the
    fewest warnings, then the smallest ``|relative_drift|`` (rows with a NaN mean last).
    """
    if not table:
        raise ValueError("table: expected at least one row, got none")
    ok = [i for i, r in enumerate(table) if r["ok"]]
    if ok:
        return max(ok, key=lambda i: (table[i]["lr"], -table[i]["std"] / max(abs(table[i]["mean"]), 1e-12)))
    finite = [i for i, r in enumerate(table) if math.isfinite(r["mean"])] or list(range(len(table)))
    return min(finite, key=lambda i: (table[i]["warnings"], abs(table[i]["relative_drift"])
                                      if math.isfinite(table[i]["relative_drift"]) else math.inf))


def calibrate_llc(
    model: nn.Module,
    loss_fn: Any,
    data: tuple[Any, Any],
    *,
    lrs: Sequence[float] = (1e-5, 1e-4, 1e-3),
    nbetas: Sequence[float] | None = None,
    localizations: Sequence[float] = (100.0,),
    **estimate_kw: Any,
) -> LLCCalibration:
    """Estimate the LLC on a grid of ``lr × nbeta × localization`` and recommend a setting.

    Every setting runs :func:`~mechnb.degeneracy.estimate_llc` with the same seed and the other
    arguments in ``estimate_kw`` (``num_chains``, ``num_draws``, ``num_burnin_steps``,
    ``sampler``, ``restrict``...). The recommendation: among the settings without any
    :meth:`~mechnb.degeneracy.LLCResult.diagnose` warning, the one with the largest step size
    (fastest mixing while still accurate), ties broken by the smallest spread over chains; if
    every setting warns, the one with the fewest warnings and the flattest trace. An estimate is
    only as good as its neighbourhood: read the whole table (:mod:`mechnb.plots.llc` draws it).

    Args:
        model, loss_fn, data: as in :func:`~mechnb.degeneracy.estimate_llc`.
        lrs: step sizes ``ε``.
        nbetas: inverse temperatures (default: ``[n / log n]``).
        localizations: ``γ`` values.
        estimate_kw: passed to every ``estimate_llc`` call (``progress`` defaults to False).

    Returns:
        An :class:`LLCCalibration`.
    """
    L = _axis("lrs", lrs)
    G = _axis("localizations", localizations)
    if nbetas is None:
        n = int(data[0].shape[0]) if isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "shape") else 2
        nbetas = [n / math.log(max(n, 2))]
    B = _axis("nbetas", nbetas)
    for bad in ("lr", "nbeta", "localization"):
        if bad in estimate_kw:
            raise TypeError(f"{bad}: set the grid with {bad}s=[...] (or localizations=[...]), not {bad}=")
    estimate_kw.setdefault("progress", False)
    estimate_kw.setdefault("warn", False)
    table, results = [], []
    for gamma, nb, lr in itertools.product(G, B, L):
        try:
            res = estimate_llc(model, loss_fn, data, lr=lr, nbeta=nb, localization=gamma, **estimate_kw)
        except FloatingPointError as e:  # a diverged setting is a row of the table, not a crash
            table.append(dict(lr=lr, nbeta=nb, localization=gamma, mean=math.nan, std=math.nan, acceptance=math.nan,
                              relative_drift=math.nan, warnings=1, ok=False, messages=[str(e)]))
            results.append(None)
            continue
        msgs = res.diagnose()
        table.append(dict(lr=lr, nbeta=nb, localization=gamma, mean=res.mean, std=res.std,
                          acceptance=float(np.mean(res.acceptance)) if res.acceptance is not None else math.nan,
                          relative_drift=res.stationarity()["relative_drift"], warnings=len(msgs), ok=not msgs,
                          messages=msgs))
        results.append(res)
    rec = recommend(table)
    return LLCCalibration(table=table, results=results, recommended=rec, lrs=L, nbetas=B, localizations=G,
                          config={k: v for k, v in estimate_kw.items() if isinstance(v, (int, float, str, bool))})
