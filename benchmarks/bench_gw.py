"""Benchmark: ``mechnb.gw.layer_gw_matrix`` against the naive all-ordered-pairs POT loop.

Model: the zoo's ``modadd-mlp`` recipe (six hidden ReLU layers, so 8 representations: input,
hidden layers, logits) trained by :func:`mechnb.experiments.gw.train_variants` (``"scratch"``: plain AdamW,
full batch, until it fits the training pairs) on ``a + b mod P`` with ``P = 37``, so that there
are ``P^2 = 1369`` distinct inputs, of which ``n = 1000`` (a seeded subset) are fed through the
network. The naive loop gets the eight max-normalised Euclidean distance matrices prebuilt
(outside its timing); ``layer_gw_matrix`` builds its own inside its timing. Then

* **naive**: a Python loop calling ``ot.gromov.gromov_wasserstein2(C_i, C_j)`` with POT's
  defaults (product start, ``tol_rel = 1e-9``, float64) on every ordered pair ``i != j``;
* **mechnb**: ``layer_gw_matrix`` defaults - unordered pairs only, the sample-aligned identity
  start, ``tol = 1e-2`` relative loss change, float32 matrix products; same exact POT solver.

Printed and saved: both total times, the ratio, the naive loop's median time per pair and
mechnb's mean, the mean number of CG iterations,
the Spearman correlation of the off-diagonal entries, and the groups ``cluster_layers`` finds in
each matrix (issue goal: >= 10x, identical groups, Spearman >= 0.98). One run of each (the
naive loop takes minutes); run on a quiet machine.

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/bench_gw.py [--quick] [--n 1000]

Writes ``benchmarks/results/gw.json`` (``--quick``: ``gw_quick.json``, a smoke test with
n = 150 and a briefly trained model - not a result).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import ot
import torch
from scipy.stats import spearmanr

from mechnb.experiments.gw import train_variants
from mechnb.gw import cluster_layers, distance_matrix, layer_groups, layer_gw_matrix, layer_representations
from mechnb.tasks import ModularArithmetic

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: n=150, 200 training steps")
    ap.add_argument("--n", type=int, default=1000, help="number of inputs (default 1000)")
    ap.add_argument("--P", type=int, default=37, help="modulus; P^2 must be >= n (default 37)")
    ap.add_argument("--steps", type=int, default=1000, help="training steps of the benchmark model")
    args = ap.parse_args(argv)
    n = 150 if args.quick else args.n
    steps = 200 if args.quick else args.steps
    if args.P**2 < n:
        ap.error(f"--P {args.P} gives only {args.P**2} distinct inputs, fewer than n={n}")

    t0 = time.perf_counter()
    variant = train_variants(["scratch"], P=args.P, steps=steps, progress=False)["scratch"]
    t_train = time.perf_counter() - t0
    print(f"model: MLP {variant.model.sizes} on a + b mod {args.P}, {steps} steps "
          f"(train acc {variant.train_acc:.3f}, test acc {variant.test_acc:.3f}, {t_train:.0f}s)")
    task = ModularArithmetic(args.P, "add")
    full = task.all_pairs()
    idx = torch.randperm(full.x.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    reps = layer_representations(variant.model, full.x[idx])
    names = list(reps)
    L = len(names)
    Cs = [distance_matrix(X, "euclidean", "max").cpu().numpy() for X in reps.values()]
    print(f"{L} representations ({', '.join(names)}), n = {n} samples")

    # naive: every ordered pair with POT's defaults
    naive = np.zeros((L, L))
    naive_times, naive_iters = [], []
    t0 = time.perf_counter()
    for i in range(L):
        for j in range(L):
            if i != j:
                t1 = time.perf_counter()
                value, log = ot.gromov.gromov_wasserstein2(Cs[i], Cs[j], log=True)
                naive_times.append(time.perf_counter() - t1)
                naive_iters.append(len(log["loss"]) - 1)
                naive[i, j] = float(value)
    t_naive = time.perf_counter() - t0
    print(f"naive  : {t_naive:8.1f}s  ({L * (L - 1)} ordered pairs, median {statistics.median(naive_times):.2f}s/pair, "
          f"mean {np.mean(naive_iters):.1f} CG iterations)")

    # mechnb: layer_gw_matrix with its defaults (distance matrices rebuilt inside, included in the time)
    t0 = time.perf_counter()
    fast = layer_gw_matrix(reps, progress=False)
    t_fast = time.perf_counter() - t0
    iu = np.triu_indices(L, 1)
    print(f"mechnb : {t_fast:8.1f}s  ({len(iu[0])} unordered pairs, mean "
          f"{t_fast / len(iu[0]):.2f}s/pair incl. distance matrices, mean {fast.n_iter[iu].mean():.1f} CG iterations)")

    off = ~np.eye(L, dtype=bool)
    rho = float(spearmanr(naive[off], fast.matrix[off]).correlation)
    g_naive, g_fast = cluster_layers(naive), cluster_layers(fast.matrix)
    same = bool(np.array_equal(g_naive, g_fast))
    ratio = t_naive / t_fast
    rel = np.abs(fast.matrix - naive)[off] / np.maximum(naive[off], 1e-12)
    asym = float(np.abs(naive - naive.T)[off].max())
    print(f"ratio naive / mechnb  : {ratio:.1f}x   (goal >= 10x)")
    print(f"Spearman (off-diag)   : {rho:.4f}   (goal >= 0.98)")
    differ = rel > 0.01
    lower = float((fast.matrix[off] < naive[off])[differ].mean()) if differ.any() else float("nan")
    print(f"median |rel. diff|    : {np.median(rel):.4f}  (max {rel.max():.3f}; naive's own asymmetry max {asym:.3g})")
    print(f"entries differing >1% : {int(differ.sum())} of {int(off.sum())}; mechnb finds the lower GW (a better local "
          f"optimum) in {lower:.0%} of them")
    print(f"groups naive          : {layer_groups(g_naive, names)}")
    print(f"groups mechnb         : {layer_groups(g_fast, names)}")
    print(f"identical groups      : {same}")

    out = {
        "benchmark": "gw layer_gw_matrix vs naive ordered-pair POT loop",
        "quick": bool(args.quick),
        "n_samples": n, "n_representations": L, "names": names, "P": args.P, "train_steps": steps,
        "model_train_acc": variant.train_acc, "model_test_acc": variant.test_acc,
        "naive_seconds": t_naive, "mechnb_seconds": t_fast, "ratio": ratio,
        "naive_median_pair_seconds": statistics.median(naive_times),
        "mechnb_mean_pair_seconds": t_fast / len(iu[0]),
        "naive_mean_cg_iterations": float(np.mean(naive_iters)),
        "mechnb_mean_cg_iterations": float(fast.n_iter[iu].mean()),
        "spearman_offdiag": rho, "median_rel_diff": float(np.median(rel)), "max_rel_diff": float(rel.max()),
        "n_entries_differing_1pct": int(differ.sum()), "mechnb_lower_frac_of_differing": lower,
        "groups_naive": g_naive.tolist(), "groups_mechnb": g_fast.tolist(), "identical_groups": same,
        "mechnb_settings": fast.settings,
        "naive_matrix": naive.tolist(), "mechnb_matrix": fast.matrix.tolist(),
        "goal_met": bool(ratio >= 10 and same and rho >= 0.98),
        "env": {"python": sys.version.split()[0], "torch": torch.__version__, "pot": ot.__version__,
                "numpy": np.__version__, "platform": platform.platform(), "threads": torch.get_num_threads()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("gw_quick.json" if args.quick else "gw.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
