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

A second part (``--trajectory``) times :func:`mechnb.degeneracy.llc_trajectory` over 20
checkpoints of the stage-wise deep linear network (:func:`mechnb.experiments.llc.stagewise_dln`)
against devinterp's estimator called once per checkpoint with the same settings (goal >= 10x), with
both methods' error against Aoyagi's λ for the rank learned at each checkpoint, and the cost of a
weight-restricted estimate (one layer) relative to the full one.

A third part (``--rank2-study``) asks why both estimators underestimate the rank-2 network under
the shared setting: the same 10 seeds with a three times longer burn-in, and with a three times
larger step (what notebook 01's calibration picks), for both estimators.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_llc.py [--quick] [--seeds 10] [--device cpu] [--trajectory]
    OMP_NUM_THREADS=1 python benchmarks/bench_llc.py --only-trajectory | --rank2-study

Writes ``benchmarks/results/llc.json`` (``llc_trajectory.json`` with ``--trajectory`` or
``--only-trajectory``, ``llc_rank2.json`` with ``--rank2-study``).
"""

from __future__ import annotations

import argparse
import json
import os
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
    ap.add_argument("--seeds", type=int, default=10, help="estimates per shape and method (error mean, time median)")
    ap.add_argument("--trajectory", action="store_true", help="also run the 20-checkpoint trajectory benchmark")
    ap.add_argument("--only-trajectory", action="store_true", help="run only the trajectory benchmark")
    ap.add_argument("--checkpoints", type=int, default=20, help="checkpoints of the trajectory benchmark")
    ap.add_argument("--shapes", type=int, default=len(SHAPES), help="run only the first N DLN shapes")
    ap.add_argument("--rank2-study", action="store_true",
                    help="only the rank-2 network under the shared setting's step size and burn-in and two fixes")
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
    if args.only_trajectory:
        return bench_trajectory(args.device, quick=bool(args.quick), n_checkpoints=args.checkpoints)
    if args.rank2_study:
        return bench_rank2(settings, args.seeds, args.device)

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
    if args.trajectory:
        result["trajectory"] = bench_trajectory(args.device, quick=bool(args.quick), n_checkpoints=args.checkpoints)
    return result


#: The rank-2 study: the shared setting, then a longer burn-in, then the step size notebook 01 calibrates.
RANK2_VARIANTS = {"shared (lr 3e-5, burn-in 1000)": dict(),
                  "lr 3e-5, burn-in 3000": dict(num_burnin_steps=3000),
                  "lr 1e-4, burn-in 1000": dict(lr=1e-4)}


def bench_rank2(settings: dict[str, Any], seeds: int, device: str) -> dict[str, Any]:
    """Why both estimators underestimate the rank-2 network: its chains have not equilibrated.

    At the shared step size (3e-5) 1000 burn-in steps are too few for the chains to spread along
    the flat directions of the degenerate ``w*`` (the loss trace is still rising when the draws
    start), so the average loss and the estimate are low. A three times longer burn-in, or a
    three times larger step, removes most of the bias for both estimators alike. Writes
    ``benchmarks/results/llc_rank2.json``.
    """
    widths, rank = SHAPES[-1]
    theory = dln_learning_coefficient(widths, rank)
    m, x, y = make_dln(widths, rank, settings["n"])
    warm = dict(settings, num_draws=5, num_burnin_steps=0)
    run_mechnb(m, x, y, warm, 0, device)
    run_devinterp(m, x, y, warm, 0, device)
    rows = {}
    for label, change in RANK2_VARIANTS.items():
        s = dict(settings, **change)
        ours = [run_mechnb(m, x, y, s, seed, device) for seed in range(seeds)]
        theirs = [run_devinterp(m, x, y, s, seed, device) for seed in range(seeds)]
        row = {}
        for name, res in (("mechnb", ours), ("devinterp", theirs)):
            est = np.asarray([e for e, _ in res])
            row[name] = dict(estimates=est.tolist(), mean=float(est.mean()), std=float(est.std(ddof=1)) if seeds > 1
                             else float("nan"), rel_error=float(est.mean() / theory - 1.0),
                             median_time=float(statistics.median(t for _, t in res)))
        row["settings"] = s
        rows[label] = row
        print(f"{label:>32}: λ = {theory:.1f}; mechnb {row['mechnb']['mean']:.2f} ({row['mechnb']['rel_error']:+.1%}, "
              f"std {row['mechnb']['std']:.2f}), devinterp {row['devinterp']['mean']:.2f} "
              f"({row['devinterp']['rel_error']:+.1%}, std {row['devinterp']['std']:.2f}); {seeds} seeds", flush=True)
    out = dict(widths=list(widths), rank=rank, theory=theory, seeds=seeds, variants=rows,
               load_average_1min_at_start=os.getloadavg()[0])
    path = RESULTS.with_name("llc_rank2.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return out


def bench_trajectory(device: str, quick: bool = False, n_checkpoints: int = 20) -> dict[str, Any]:
    """``llc_trajectory`` over 20 stage-wise checkpoints vs devinterp once per checkpoint; restricted vs full cost."""
    from mechnb.degeneracy import llc_trajectory
    import os

    from mechnb.experiments.llc import STAGEWISE_LLC, plateaus, stagewise_dln

    load0 = os.getloadavg()[0]
    run = stagewise_dln(checkpoint_every=125)  # 2500 steps: 21 checkpoints, the first 20 used
    K = len(run.result.checkpoints)
    idx = sorted({int(round(i)) for i in np.linspace(0, K - 1, min(n_checkpoints, K))})
    s = dict(STAGEWISE_LLC)
    s.pop("progress", None)
    s.pop("seed", None)
    if quick:
        s.update(num_draws=20, num_burnin_steps=5)
        idx = idx[:3]
    ckpts = [run.result.checkpoints[i] for i in idx]
    truth = np.asarray([run.aoyagi[i] for i in idx])
    n = int(run.x.shape[0])
    settings = dict(s, batch_size=n, n=n)
    llc_trajectory(ckpts[:1], sum_mse, (run.x, run.y), model=run.model, **dict(s, num_draws=5, num_burnin_steps=0),
                   progress=False)  # warm-up
    t0 = time.perf_counter()
    tr = llc_trajectory(ckpts, sum_mse, (run.x, run.y), model=run.model, **s, seed=0, device=device, progress=False)
    t_ours = time.perf_counter() - t0
    models = []
    for c in ckpts:
        m = MLP(list(run.widths), activation="linear", bias=False).double()
        m.load_state_dict(c["state"])
        models.append(m)
    run_devinterp(models[0], run.x, run.y, dict(settings, num_draws=5, num_burnin_steps=0), 0, device)  # warm-up
    t0 = time.perf_counter()
    theirs = [run_devinterp(m, run.x, run.y, settings, 0, device)[0] for m in models]
    t_theirs = time.perf_counter() - t0
    learned = truth > 0  # rank-0 checkpoints (near w = 0, a saddle with loss >> 0) have no finite-sample meaning
    err = lambda est: float(np.mean(np.abs(np.asarray(est)[learned] - truth[learned]) / truth[learned]))  # noqa: E731
    # The plateaus: runs of at least 3 checkpoints at one learned rank, their first and last dropped
    # (a checkpoint half-way through a direction's rise is not at a critical point and its estimate
    # is meaningless, e.g. strongly negative while the loss still falls under the chains). At this
    # spacing (125 steps) the rank-1 stage spans two checkpoints, the second already rising to
    # rank 2, so it is not a plateau here (notebook 06 samples every 50 steps and has one).
    ranks = np.asarray([run.ranks[i] for i in idx])
    on_plateaus = [(r, pl) for r, pl in plateaus(ranks, min_length=3) if r > 0]

    def per_plateau(est) -> list[dict[str, Any]]:
        e = np.asarray(est, dtype=float)
        return [dict(rank=int(r), checkpoints=[int(i) for i in pl], aoyagi=float(truth[pl[0]]),
                     median=float(np.median(e[pl])), rel_error=float(np.median(e[pl]) / truth[pl[0]] - 1.0))
                for r, pl in on_plateaus]
    # restricted vs full cost, on the last checkpoint
    full_model = models[-1]
    kw = dict(s, seed=0, device=device, progress=False)
    t0 = time.perf_counter()
    estimate_llc(full_model, sum_mse, (run.x, run.y), **kw)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    estimate_llc(full_model, sum_mse, (run.x, run.y), restrict=["layers.0.weight"], **kw)
    t_restricted = time.perf_counter() - t0
    out = dict(checkpoints=len(ckpts), settings=settings, steps=[int(c["step"]) for c in ckpts], aoyagi=truth.tolist(),
               ranks=ranks.tolist(),
               mechnb=dict(estimates=tr.mean.tolist(), seconds=t_ours, mean_abs_rel_error_learned=err(tr.mean),
                           plateaus=per_plateau(tr.mean)),
               devinterp=dict(estimates=theirs, seconds=t_theirs, mean_abs_rel_error_learned=err(theirs),
                              plateaus=per_plateau(theirs)),
               max_abs_difference_on_plateaus=float(max(
                   (np.abs(np.asarray(tr.mean)[pl] - np.asarray(theirs)[pl]).max() for _, pl in on_plateaus),
                   default=float("nan"))),
               speedup=t_theirs / t_ours, goal_speedup_10x=t_theirs / t_ours >= 10,
               restricted_over_full_time=t_restricted / t_full, quick=quick,
               load_average_1min_at_start=load0)
    print(f"trajectory over {len(ckpts)} checkpoints: mechnb {t_ours:.2f} s, devinterp {t_theirs:.2f} s "
          f"({out['speedup']:.1f}x); error vs Aoyagi (learned checkpoints): mechnb "
          f"{out['mechnb']['mean_abs_rel_error_learned']:.1%}, devinterp {out['devinterp']['mean_abs_rel_error_learned']:.1%}; "
          f"restricted/full time {out['restricted_over_full_time']:.2f}")
    for a, b in zip(out["mechnb"]["plateaus"], out["devinterp"]["plateaus"]):
        print(f"  plateau rank {a['rank']} (checkpoints {a['checkpoints']}): Aoyagi {a['aoyagi']:.1f}, median "
              f"estimate mechnb {a['median']:.2f} ({a['rel_error']:+.1%}), devinterp {b['median']:.2f} "
              f"({b['rel_error']:+.1%})")
    print(f"  largest |mechnb - devinterp| on a plateau checkpoint: {out['max_abs_difference_on_plateaus']:.2f}")
    path = RESULTS.with_name("llc_trajectory.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
