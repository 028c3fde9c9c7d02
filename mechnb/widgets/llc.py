"""The LLC calibration grid as a panel (notebook 06): pick a step size and nβ, see traces, acceptance, estimate."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np

from mechnb.plots import llc as llc_plots
from mechnb.widgets._common import show_figure

__all__ = ["CalibrationPanel"]


class CalibrationPanel:
    """Browse an :class:`mechnb.degeneracy.LLCCalibration`: one setting's chains at a time.

    Two dropdowns (step size, nβ) select a row of the grid (at its recommended localization);
    the panel shows that row's per-chain LLC traces, and a line with the estimate, the MALA
    acceptance, the stationarity and :meth:`~mechnb.degeneracy.LLCResult.diagnose`'s warnings.
    ``update()`` is the callback (tests set ``.value`` on the dropdowns and read ``output``).
    """

    def __init__(self, calibration: Any, lr: float | None = None, nbeta: float | None = None) -> None:
        self.cal = calibration
        best = calibration.best
        self.gamma = best["localization"]
        self.lr = widgets.Dropdown(options=[(f"{v:.0e}", v) for v in calibration.lrs],
                                   value=best["lr"] if lr is None else lr, description="step size")
        self.nbeta = widgets.Dropdown(options=[(f"{v:.3g}", v) for v in calibration.nbetas],
                                      value=best["nbeta"] if nbeta is None else nbeta, description="nβ")
        self.text = widgets.HTML()
        self.output = widgets.Output()
        self.lr.observe(lambda _: self.update(), names="value")
        self.nbeta.observe(lambda _: self.update(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.lr, self.nbeta]), self.text, self.output])
        self.update()

    def row(self) -> tuple[int, dict[str, Any]]:
        """The selected setting: its index in the table and the row."""
        for i, r in enumerate(self.cal.table):
            if r["lr"] == self.lr.value and r["nbeta"] == self.nbeta.value and r["localization"] == self.gamma:
                return i, r
        raise LookupError(f"no row for lr={self.lr.value}, nbeta={self.nbeta.value}")

    def update(self) -> None:
        """Redraw the selected setting's traces and summary."""
        i, r = self.row()
        res = self.cal.results[i]
        acc = "n/a" if not np.isfinite(r["acceptance"]) else f"{r['acceptance']:.3f}"
        star = " (recommended)" if i == self.cal.recommended else ""
        msgs = r.get("messages") or []
        warn = "<br>".join(f"⚠ {m}" for m in msgs) if msgs else "✔ no warnings"
        self.text.value = (f"<b>lr={r['lr']:.0e}, nβ={r['nbeta']:.3g}, γ={r['localization']:.3g}{star}</b>: "
                           f"estimate {r['mean']:.3g} ± {r['std']:.2g}, acceptance {acc}, "
                           f"relative drift {r['relative_drift']:+.2f}<br>{warn}")
        if res is None:
            self.output.outputs = ()
            return
        show_figure(self.output, llc_plots.llc_traces(res.llc_trace, title=f"lr={r['lr']:.0e}, nβ={r['nbeta']:.3g}",
                                                      burn_in=int(res.config.get("num_burnin_steps", 0))))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
