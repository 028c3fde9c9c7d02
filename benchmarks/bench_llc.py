"""Benchmark: mechnb's batched-chain ``estimate_llc`` against devinterp's SGLD estimator.

On deep linear networks (DLNs) at a known true parameter, with noiseless data ``y = f(x; w*)``,
both estimators run the *same* sampler settings (chains, draws, burn-in, step size,
localization, ``nβ``, minibatch size, SGLD update ``Δw = -(ε/2)(nβ ∇L_m + γ(w - w*)) + N(0, ε)``)
and are compared on

* the relative error of the LLC estimate against the theoretical learning coefficient of
  Aoyagi (2024) (``mechnb.degeneracy.dln_learning_coefficient``), mean over seeds;
* the wall time of one estimate (median over seeds), and the ratio devinterp / mechnb.

Goal (issue 3): error no worse than devinterp's and mechnb at least 3x faster. mechnb runs all
chains at once (one batched forward/backward per step); devinterp runs them one after the other
(``cores=1``). Both single-threaded, each warmed up once before timing.

devinterp is a benchmark-only extra (``pip install --no-deps "devinterp<2"`` plus ``cloudpickle``;
the 1.x API ``estimate_learning_coeff_with_summary`` is used).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_llc.py [--quick] [--seeds 3] [--device cpu]

Writes ``benchmarks/results/llc.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mechnb.degeneracy import dln_learning_coefficient, estimate_llc
from mechnb.degeneracy import sse_loss as sum_mse
from mechnb.experiments.degeneracy import planted_dln
from mechnb.models import MLP

RESULTS = Path(__file__).resolve().parent / "results" / "llc.json"

#: (widths, rank of every factor or None for generic full-rank factors)
SHAPES: list[tuple[tuple[int, ...], int | None]] = [
    ((5, 4, 3, 6), None),
    ((3, 6, 2, 4), None),
    ((4, 3, 3, 4), None),
    ((6, 4, 4, 5), 2),
]


def make_dln(widths: tuple[int, ...], rank: int | None, n: int, seed: int = 0) -> tuple[MLP, torch.Tensor, torch.Tensor]:
    """The planted DLN of the tests and notebook 01 (well-conditioned ``w*``, noiseless data)."""
    return planted_dln(widths, rank=rank, n_samples=n, seed=seed)


def run_mechnb(model: MLP, x: torch.Tensor, y: torch.Tensor, s: dict[str, Any], seed: int,
               device: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    res = estimate_llc(model, sum_mse, (x, y), num_chains=s["num_chains"], num_draws=s["num_draws"],
                       num_burnin_steps=s["num_burnin_steps"], lr=s["lr"], localization=s["localization"],
                       nbeta=s["nbeta"], batch_size=s["batch_size"], seed=seed, device=device, progress=False)
    return res.mean, time.perf_counter() - t0


def run_devinterp(model: MLP, x: torch.Tensor, y: torch.Tensor, s: dict[str, Any], seed: int,
                  device: str) -> tuple[float, float]:
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from torch.utils.data import DataLoader, TensorDataset

    def evaluate(m: torch.nn.Module, data: Any) -> torch.Tensor:
        xb, yb = data
        return sum_mse(m(xb), yb)

    loader = DataLoader(TensorDataset(x, y), batch_size=s["batch_size"], shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = estimate_learning_coeff_with_summary(
            model, loader, evaluate=evaluate, sampling_method=SGLD,
            optimizer_kwargs=dict(lr=s["lr"], localization=s["localization"], nbeta=s["nbeta"]),
            num_chains=s["num_chains"], num_draws=s["num_draws"], num_burnin_steps=s["num_burnin_steps"],
            cores=1, seed=seed, device=device, verbose=False,
        )
    return float(out["llc/mean"]), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks the script runs (numbers meaningless)")
    ap.add_argument("--seeds", type=int, default=3, help="estimates per shape and method (error mean, time median)")
    ap.add_argument("--shapes", type=int, default=len(SHAPES), help="run only the first N DLN shapes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    try:
        import devinterp  # noqa: F401
    except ImportError:
        sys.exit("devinterp is not installed: pip install --no-deps 'devinterp<2' cloudpickle (benchmark-only extra)")
    from importlib.metadata import version

    settings = dict(num_chains=8, num_draws=1000, num_burnin_steps=1000, lr=3e-5, localization=1.0, nbeta=500.0,
                    batch_size=100, n=1000)
    shapes = SHAPES[: max(1, args.shapes)]
    if args.quick:
        settings.update(num_draws=40, num_burnin_steps=10, num_chains=4)
        shapes = shapes[:2]
        args.seeds = 1
    torch.set_num_threads(1)

    # warm-up (first-call costs of both libraries are not part of the comparison)
    m, x, y = make_dln(shapes[0][0], shapes[0][1], settings["n"])
    warm = dict(settings, num_draws=5, num_burnin_steps=0)
    run_mechnb(m, x, y, warm, 0, args.device)
    run_devinterp(m, x, y, warm, 0, args.device)

    rows = []
    print(f"{'shape':>16} {'rank':>4} {'theory':>7} | {'mechnb λ̂':>9} {'err':>7} {'time s':>7} | "
          f"{'devinterp λ̂':>12} {'err':>7} {'time s':>7} | {'speed-up':>8}")
    for widths, rank in shapes:
        theory = dln_learning_coefficient(widths, rank)
        m, x, y = make_dln(widths, rank, settings["n"])
        ours, theirs = [], []
        for seed in range(args.seeds):
            ours.append(run_mechnb(m, x, y, settings, seed, args.device))
            theirs.append(run_devinterp(m, x, y, settings, seed, args.device))
        est_o, est_d = float(np.mean([e for e, _ in ours])), float(np.mean([e for e, _ in theirs]))
        t_o, t_d = statistics.median(t for _, t in ours), statistics.median(t for _, t in theirs)
        row = dict(widths=list(widths), rank=rank, theory=theory,
                   mechnb=dict(estimates=[e for e, _ in ours], mean=est_o, rel_error=(est_o - theory) / theory,
                               times=[t for _, t in ours], median_time=t_o),
                   devinterp=dict(estimates=[e for e, _ in theirs], mean=est_d, rel_error=(est_d - theory) / theory,
                                  times=[t for _, t in theirs], median_time=t_d),
                   speedup=t_d / t_o)
        rows.append(row)
        print(f"{str(widths):>16} {str(rank):>4} {theory:7.3f} | {est_o:9.3f} {row['mechnb']['rel_error']:+7.1%} "
              f"{t_o:7.2f} | {est_d:12.3f} {row['devinterp']['rel_error']:+7.1%} {t_d:7.2f} | {row['speedup']:7.1f}x")

    err_o = float(np.mean([abs(r["mechnb"]["rel_error"]) for r in rows]))
    err_d = float(np.mean([abs(r["devinterp"]["rel_error"]) for r in rows]))
    speedup = float(statistics.median(r["speedup"] for r in rows))
    summary = dict(mean_abs_rel_error_mechnb=err_o, mean_abs_rel_error_devinterp=err_d,
                   median_speedup=speedup, goal_speedup_3x=speedup >= 3.0, goal_error_no_worse=err_o <= err_d)
    print(f"\nmean |relative error|: mechnb {err_o:.1%}  devinterp {err_d:.1%};  "
          f"median speed-up devinterp/mechnb: {speedup:.1f}x  (goal >= 3x: {'met' if speedup >= 3 else 'NOT met'})")
    result = dict(
        benchmark="llc", quick=bool(args.quick), settings=settings, seeds=args.seeds, rows=rows, summary=summary,
        environment=dict(torch=torch.__version__, devinterp=version("devinterp"), python=platform.python_version(),
                         machine=platform.machine(), processor=platform.processor(), threads=torch.get_num_threads(),
                         device=args.device),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
