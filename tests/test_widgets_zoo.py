"""The zoo browser widget of notebook 00: its callback redraws summary and figure."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from mechnb.widgets.zoo import ZooBrowser, model_figure  # noqa: E402
from mechnb import zoo  # noqa: E402


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_changing_the_dropdown_redraws():
    b = ZooBrowser(initial="tms-5-2")
    assert "tms-5-2" in b.summary.value and "pentagon" in b.summary.value
    fig_before, png_before = b.figure, _png(b.figure)
    b.dropdown.value = "modadd-mlp"
    assert "modadd-mlp" in b.summary.value and "test_acc" in b.summary.value
    assert b.figure is not fig_before
    assert _png(b.figure) != png_before
    assert b.figure.axes[0].get_xlabel() == "training step"
    assert len(b.output.outputs) == 1  # one figure shown, the old one cleared


@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_model_has_a_labelled_figure(name):
    model, entry = zoo.load(name)
    fig = model_figure(name, model, entry)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and (ax.get_title() or fig._suptitle)
