"""The schematics of mechnb.plots.schematics: each draws the boxes its method needs, labelled, inside the axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from mechnb import plots  # noqa: E402


def _inside(fig: Figure) -> bool:
    """Every box lies within its axes' limits (nothing drawn off the canvas)."""
    from matplotlib.patches import FancyBboxPatch

    for ax in fig.axes:
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        for p in ax.patches:
            if isinstance(p, FancyBboxPatch):
                if not (x0 <= p.get_x() and p.get_x() + p.get_width() <= x1
                        and y0 <= p.get_y() and p.get_y() + p.get_height() <= y1):
                    return False
    return True


def test_spd_pipeline_has_the_four_losses_and_both_importances() -> None:
    fig = plots.schematics.spd_pipeline()
    labels = plots.schematics.box_labels(fig)
    assert isinstance(fig, Figure) and len(labels) == 12 and len(set(labels)) == 12
    text = " | ".join(labels)
    for piece in ("faithfulness", "stochastic recon", "layerwise recon", "importance minimality",
                  "lower-leaky", "upper-leaky", "masks", "target f (frozen)", "AdamW"):
        assert piece in text, piece
    # the masks are built from the lower-leaky importances, minimality from the upper-leaky ones
    assert labels.index("lower-leaky g") < labels.index("masks\nm = g + (1 − g) r")
    arrows = [p for ax in fig.axes for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 15
    assert _inside(fig)
    plt.close(fig)


def test_edge_patching_shows_both_runs_and_one_patched_edge() -> None:
    fig = plots.schematics.edge_patching()
    labels = plots.schematics.box_labels(fig)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["corrupted run", "clean run, edge u → v patched"]
    assert {"writer u", "writer w", "reader v", "reader v′", "u (corrupted)"} <= set(labels)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert sum("patched" in t for t in texts) == 1   # exactly one patched edge
    assert _inside(fig)
    plt.close(fig)


def test_interaction_basis_follows_the_steps_of_degeneracy_interaction() -> None:
    fig = plots.schematics.interaction_basis()
    labels = plots.schematics.box_labels(fig)
    assert len(labels) == 9 and len(set(labels)) == 9
    text = " | ".join(labels)
    for piece in ("activations f_l = [f, 1]", "Gram G", "drop null directions", "whiten", "next layer's basis",
                  "Jacobian", "M′ = (1/n) Σ Jᵀ J", "V Λ Vᵀ", "C_l = U D^(-1/2) V Λ^(1/2)", "C_lᵀ G C_l = Λ",
                  "interaction basis"):
        assert piece in text, piece
    # the data side comes before the Jacobian side, and both before C and the basis
    order = [next(i for i, lab in enumerate(labels) if lab.startswith(k)) for k in ("Gram", "PCA", "Jacobian", "M =", "C_l",
                                                                                     "interaction basis")]
    assert order == sorted(order)
    arrows = [p for ax in fig.axes for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 11
    # the arrows into C come from M (V, Λ) and from the whitening (U D^-1/2); C feeds the basis
    texts = [t.get_text().strip() for ax in fig.axes for t in ax.texts]
    assert {"V, Λ", "U D^(-1/2)", "feeds layer l − 1"} <= set(texts)
    assert _inside(fig)
    plt.close(fig)


@pytest.mark.parametrize("name", ["spd_pipeline", "edge_patching", "interaction_basis"])
def test_schematics_take_a_title(name: str) -> None:
    fig = getattr(plots.schematics, name)(title="T")
    titles = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""]
    assert any(t.startswith("T") for t in titles)
    plt.close(fig)
