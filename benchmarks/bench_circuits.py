"""Benchmark: EAP and EAP-IG against exact per-edge activation patching on ``tiny-lm``.

For the agreement and occupation-pronoun prompts of the zoo's ``tiny-lm`` this measures, in one
run, the wall time of

* ``attribute(method="eap")``      - 2 forward passes + 1 backward pass for all edges,
* ``attribute(method="eap-ig")``   - 2 forward + ``ig_steps`` forward/backward passes,
* ``attribute(method="exact")``    - 1 patched forward pass per edge (the oracle),

(medians over repeats), the time ratio exact / method (issue goal: EAP >= 50x), and the agreement
of each method with the exact scores: Spearman rank correlation (signed and of |score|) and
top-20 overlap. A second, timing-only section uses a randomly initialised 4-layer, 8-head
TinyTransformer to show how the ratio grows with the number of edges (exact is linear in the
edge count, EAP is not).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_circuits.py [--quick] [--device cpu]

Writes ``benchmarks/results/circuits.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mechnb.circuits import Graph, attribute, rank_agreement
from mechnb.models import TinyTransformer
from mechnb.tasks import PromptPairs, SyntheticLanguage

RESULTS = Path(__file__).resolve().parent / "results" / "circuits.json"


def median_time(fn: Any, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load_model(device: str) -> tuple[TinyTransformer, str]:
    """The zoo's tiny-lm, or (if the zoo has not been built) a quickly trained stand-in."""
    try:
        from mechnb import zoo

        model, _ = zoo.load("tiny-lm", device=device)
        return model.eval(), "zoo:tiny-lm"  # type: ignore[return-value]
    except Exception as e:  # noqa: BLE001 - any failure to load falls back to training
        print(f"zoo tiny-lm unavailable ({type(e).__name__}: {e}); training a stand-in for 600 steps", file=sys.stderr)
        from mechnb.train import TrainConfig, cross_entropy_loss, train

        lang = SyntheticLanguage()
        model = TinyTransformer(lang.vocab_size, 64, 2, 4, 256, lang.n_ctx, init_seed=0)
        pad = lang.tokenizer.pad_id

        def loss_fn(m: torch.nn.Module, toks: torch.Tensor) -> torch.Tensor:
            toks = toks.to(device)
            return cross_entropy_loss(m(toks[:, :-1]), toks[:, 1:].masked_fill(toks[:, 1:] == pad, -100))

        train(model, lambda s, g: lang.sample_batch(64, seed=1000 + s), loss_fn,
              TrainConfig(steps=600, lr=3e-3, warmup_steps=50, schedule="cosine"), device=device, progress=False)
        return model.eval(), "fallback: TinyTransformer(2 layers, d_model 64) trained 600 steps"


def bench_task(model: TinyTransformer, graph: Graph, pairs: PromptPairs, repeats: int, exact_repeats: int,
               ig_steps: list[int]) -> dict[str, Any]:
    with torch.no_grad():
        t_fwd = median_time(lambda: model(pairs.clean), repeats)
    exact = attribute(model, graph, pairs, method="exact")
    t_exact = median_time(lambda: attribute(model, graph, pairs, method="exact"), exact_repeats)
    rows: dict[str, Any] = {}
    methods = [("eap", 1)] + [("eap-ig", s) for s in ig_steps]
    for method, steps in methods:
        name = method if method == "eap" else f"eap-ig({steps})"
        scores = attribute(model, graph, pairs, method=method, ig_steps=steps)
        t = median_time(lambda: attribute(model, graph, pairs, method=method, ig_steps=steps), repeats)
        agree = rank_agreement(scores, exact, k=20)
        rows[name] = {"seconds": t, "forward_equivalents": t / t_fwd, "speedup_vs_exact": t_exact / t,
                      "spearman": agree["spearman"], "spearman_abs": agree["spearman_abs"],
                      "top20_overlap": agree["top_k_overlap"]}
    return {"n_prompts": len(pairs), "n_edges": graph.n_edges, "forward_seconds": t_fwd,
            "exact_seconds": t_exact, "exact_forward_equivalents": t_exact / t_fwd,
            "metric_clean": exact.metric_clean, "metric_corrupted": exact.metric_corrupted, "methods": rows}


def bench_scaling(device: str, repeats: int) -> list[dict[str, Any]]:
    """Timing only: random-init models of growing size (the ratio grows with the edge count)."""
    lang = SyntheticLanguage()
    pairs = lang.agreement_prompts(32, seed=7).to(device)
    out = []
    for n_layers, n_heads in [(2, 4), (4, 8)]:
        m = TinyTransformer(lang.vocab_size, 64, n_layers, n_heads, 256, lang.n_ctx, init_seed=0).to(device).eval()
        g = Graph.from_model(m)
        t_eap = median_time(lambda: attribute(m, g, pairs, method="eap"), repeats)
        t_exact = median_time(lambda: attribute(m, g, pairs, method="exact"), 1, warmup=False)
        out.append({"n_layers": n_layers, "n_heads": n_heads, "n_edges": g.n_edges, "eap_seconds": t_eap,
                    "exact_seconds": t_exact, "speedup": t_exact / t_eap})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not for reporting)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--no-scaling", action="store_true", help="skip the random-init scaling section")
    args = ap.parse_args(argv)
    repeats, exact_repeats = (3, 1) if args.quick else (21, 5)
    torch.manual_seed(0)
    model, source = load_model(args.device)
    graph = Graph.from_model(model)
    lang = SyntheticLanguage()
    tasks = {
        "agreement": lang.agreement_prompts(args.n_prompts, seed=7).to(args.device),
        "gender-occupation": lang.gender_prompts(args.n_prompts, seed=7, subject="occupation").to(args.device),
    }
    result: dict[str, Any] = {
        "benchmark": "circuits: EAP / EAP-IG vs exact per-edge patching",
        "model": source, "device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.platform(), "quick": args.quick, "repeats": repeats, "exact_repeats": exact_repeats,
        "goal": "EAP >= 50x faster than exact", "tasks": {},
    }
    print(f"model: {source}; graph: {graph}")
    header = f"{'task':<18} {'method':<11} {'time (ms)':>10} {'fwd-equiv':>9} {'exact/method':>12} " \
             f"{'spearman':>8} {'|s| spearman':>12} {'top-20':>7}"
    print(header)
    print("-" * len(header))
    for name, pairs in tasks.items():
        r = bench_task(model, graph, pairs, repeats, exact_repeats, ig_steps=[5, 20])
        result["tasks"][name] = r
        print(f"{name:<18} {'exact':<11} {1e3 * r['exact_seconds']:>10.1f} {r['exact_forward_equivalents']:>9.1f} "
              f"{1.0:>12.1f} {1.0:>8.3f} {1.0:>12.3f} {1.0:>7.2f}")
        for m, row in r["methods"].items():
            print(f"{'':<18} {m:<11} {1e3 * row['seconds']:>10.1f} {row['forward_equivalents']:>9.1f} "
                  f"{row['speedup_vs_exact']:>12.1f} {row['spearman']:>8.3f} {row['spearman_abs']:>12.3f} "
                  f"{row['top20_overlap']:>7.2f}")
    if not args.no_scaling:
        result["scaling"] = bench_scaling(args.device, repeats)
        print("\nscaling (random init, timing only):")
        for s in result["scaling"]:
            print(f"  {s['n_layers']} layers x {s['n_heads']} heads: {s['n_edges']:>5} edges, "
                  f"EAP {1e3 * s['eap_seconds']:.1f} ms, exact {1e3 * s['exact_seconds']:.0f} ms, "
                  f"exact/EAP = {s['speedup']:.0f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
