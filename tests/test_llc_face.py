"""Notebook 06's face: the LLC figures and the calibration panel (set a control, check the figure)."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from mechnb import plots, widgets
from mechnb.degeneracy import calibrate_llc, sse_loss
from mechnb.experiments.degeneracy import planted_dln

torch.set_num_threads(1)


def test_figures_are_figures():
    steps = np.arange(5) * 10
    f1 = plots.llc.llc_over_training(steps, np.arange(5.0), llc_std=np.ones(5), train_loss=np.exp(-steps / 10),
                                     test_loss=np.exp(-steps / 20), reference=np.arange(5.0), marks=[20])
    f2 = plots.llc.calibration_heatmap(np.arange(6.0).reshape(2, 3), [1e-5, 1e-4, 1e-3], [10.0, 100.0],
                                       ok=np.array([[1, 1, 0], [1, 0, 0]], bool), recommended=(0, 1))
    f3 = plots.llc.llc_traces(np.random.default_rng(0).random((3, 20)))
    f4 = plots.llc.essential_dynamics(np.random.default_rng(0).random((6, 2)), np.arange(6), [2], explained=[0.7, 0.2])
    assert all(isinstance(f, Figure) for f in (f1, f2, f3, f4))
    assert len(f1.axes) == 2 and len(f4.axes) >= 2


def test_calibration_panel_shows_the_selected_setting():
    m, x, y = planted_dln((4, 3), n_samples=60)
    cal = calibrate_llc(m, sse_loss, (x, y), lrs=[1e-4, 3e-3], nbetas=[100.0], localizations=[1.0], num_chains=2,
                        num_draws=40)
    panel = widgets.llc.CalibrationPanel(cal)
    assert panel.lr.value == cal.best["lr"]
    assert len(panel.output.outputs) == 1 and "Figure" in panel.output.outputs[0]["data"]["text/plain"]
    first = panel.text.value
    other = [v for v in cal.lrs if v != panel.lr.value][0]
    panel.lr.value = other
    assert f"lr={other:.0e}" in panel.text.value and panel.text.value != first
    assert len(panel.output.outputs) == 1 and "Figure" in panel.output.outputs[0]["data"]["text/plain"]
    assert ("acceptance 0." in panel.text.value)
