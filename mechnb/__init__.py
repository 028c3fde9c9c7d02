"""mechnb: a Jupyter workbook for mechanistic interpretability on small CPU-trained models.

Method modules (one concept each): :mod:`mechnb.degeneracy`, :mod:`mechnb.spd`, :mod:`mechnb.gw`,
:mod:`mechnb.circuits`. Foundations: :mod:`mechnb.models`, :mod:`mechnb.tasks`, :mod:`mechnb.train`,
:mod:`mechnb.zoo`. Faces: :mod:`mechnb.plots`, :mod:`mechnb.widgets`, :mod:`mechnb.exercises`.
"""

__version__ = "0.1.0"


def fast_mode() -> bool:
    """True when ``MECHNB_FAST=1`` (set by ``make test`` / CI): notebooks shrink their budgets."""
    from mechnb._torch import env_flag

    return env_flag("MECHNB_FAST")
