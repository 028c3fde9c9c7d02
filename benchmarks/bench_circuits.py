"""Benchmark: circuit discovery on ``tiny-lm`` - EAP / EAP-IG against exact patching, exact patching
batched against the per-edge loop, ACDC's cost, and EAP against its two-forward-one-backward floor.

For the agreement and occupation-pronoun prompts of the zoo's ``tiny-lm`` this measures, in one run
(medians over repeats):

* ``attribute(method="eap")``      - 2 forward passes + 1 backward pass for all edges,
* ``attribute(method="eap-ig")``   - 2 forward + ``ig_steps`` forward/backward passes,
* ``attribute(method="exact")``    - every edge patched alone: batched (many edges per forward pass,
  :mod:`mechnb.circuits.exact`) and the per-edge loop (``batched=False``, one patched forward pass
  per edge); the speed-up of the batched engine (goal: >= 5x) and the largest difference between
  the two (must be <= 1e-5),
* ``attribute(method="acdc")``     - greedy pruning (Conmy et al. 2023): forward passes and seconds,

in seconds and in *forward-equivalents* (the time of one plain forward pass on the same prompts),
the floor of EAP (one corrupted forward, one clean forward + backward to the embedding, timed
alone) in the same unit, and the agreement of EAP / EAP-IG with the exact scores (Spearman of the
signed scores and of |score|, top-20 overlap). A second section times exact patching, batched and
looped, on a randomly initialised 4-layer, 8-head TinyTransformer (1519 edges), and EAP there.

A third, separate section (``--gpt2-small``, needs ``transformers``) times EAP on a GPT-2-small-shaped
model (12 layers x 12 heads, random init, converted by ``mechnb.interop.from_hf``) on 32 prompts of 16
tokens: seconds, extra peak memory, EAP against its 2-forward-1-backward floor (goal: within 2x), and
exact patching against EAP on a 2-layer slice of the same width.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_circuits.py [--quick] [--device cpu]
    OMP_NUM_THREADS=1 python benchmarks/bench_circuits.py --gpt2-small [--reduced]

Writes ``benchmarks/results/circuits.json`` (``--quick``: ``circuits_quick.json``, a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mechnb.circuits import Graph, attribute, logit_diff, rank_agreement
from mechnb.models import TinyTransformer
from mechnb.tasks import PromptPairs, SyntheticLanguage

RESULTS = Path(__file__).resolve().parent / "results"


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


def eap_floor(model: TinyTransformer, pairs: PromptPairs) -> float:
    """Seconds of EAP's floor: a corrupted forward pass, a clean forward pass and one backward pass
    to the embedding (the gradient every reader's input needs), without EAP's bookkeeping."""

    def run() -> None:
        with torch.no_grad():
            model(pairs.corrupted)
        with torch.enable_grad():
            emb: dict[str, torch.Tensor] = {}

            def leaf(x: torch.Tensor, hook: object) -> torch.Tensor:
                emb["x"] = x.detach().requires_grad_(True)
                return emb["x"]

            with model.hooks([("hook_embed", leaf)]):
                value = logit_diff(model(pairs.clean), pairs)
            torch.autograd.grad(value, emb["x"])

    return median_time(run, 21)


def bench_task(model: TinyTransformer, graph: Graph, pairs: PromptPairs, repeats: int, exact_repeats: int,
               ig_steps: list[int]) -> dict[str, Any]:
    with torch.no_grad():
        t_fwd = median_time(lambda: model(pairs.clean), repeats)
    t_floor = eap_floor(model, pairs)
    loop = attribute(model, graph, pairs, method="exact", batched=False)
    batched = attribute(model, graph, pairs, method="exact")
    t_loop = median_time(lambda: attribute(model, graph, pairs, method="exact", batched=False), exact_repeats)
    t_batched = median_time(lambda: attribute(model, graph, pairs, method="exact"), repeats)
    acdc = attribute(model, graph, pairs, method="acdc")
    t_acdc = median_time(lambda: attribute(model, graph, pairs, method="acdc"), exact_repeats)
    rows: dict[str, Any] = {}
    methods = [("eap", 1)] + [("eap-ig", s) for s in ig_steps]
    for method, steps in methods:
        name = method if method == "eap" else f"eap-ig({steps})"
        scores = attribute(model, graph, pairs, method=method, ig_steps=steps)
        t = median_time(lambda: attribute(model, graph, pairs, method=method, ig_steps=steps), repeats)
        agree = rank_agreement(scores, batched, k=20)
        rows[name] = {"seconds": t, "forward_equivalents": t / t_fwd, "speedup_vs_exact_batched": t_batched / t,
                      "speedup_vs_exact_loop": t_loop / t, "spearman": agree["spearman"],
                      "spearman_abs": agree["spearman_abs"], "top20_overlap": agree["top_k_overlap"]}
    rows["eap"]["floor_seconds"] = t_floor
    rows["eap"]["floor_forward_equivalents"] = t_floor / t_fwd
    rows["eap"]["times_floor"] = rows["eap"]["seconds"] / t_floor
    return {
        "n_prompts": len(pairs), "n_edges": graph.n_edges, "forward_seconds": t_fwd,
        "exact_loop_seconds": t_loop, "exact_loop_forward_equivalents": t_loop / t_fwd,
        "exact_batched_seconds": t_batched, "exact_batched_forward_equivalents": t_batched / t_fwd,
        "exact_batched_passes": batched.info["forward_passes"], "batched_speedup": t_loop / t_batched,
        "batched_max_abs_difference": float((batched.values - loop.values).abs().max()),
        "acdc": {"seconds": t_acdc, "forward_passes": acdc.info["forward_passes"],
                 "forward_equivalents": t_acdc / t_fwd, "threshold": acdc.info["threshold"],
                 "circuit_edges": acdc.circuit.n_edges if acdc.circuit is not None else None},
        "metric_clean": batched.metric_clean, "metric_corrupted": batched.metric_corrupted, "methods": rows,
    }


def bench_scaling(device: str, repeats: int) -> list[dict[str, Any]]:
    """Timing only: random-init models of growing size (exact is linear in the edge count, EAP is not).
    The per-edge loop runs once per model (24 s on the 1519-edge one); its scores check the batched ones."""
    lang = SyntheticLanguage()
    pairs = lang.agreement_prompts(32, seed=7).to(device)
    out = []
    for n_layers, n_heads in [(2, 4), (4, 8)]:
        m = TinyTransformer(lang.vocab_size, 64, n_layers, n_heads, 256, lang.n_ctx, init_seed=0).to(device).eval()
        g = Graph.from_model(m)
        t_eap = median_time(lambda: attribute(m, g, pairs, method="eap"), repeats)
        t0 = time.perf_counter()
        loop = attribute(m, g, pairs, method="exact", batched=False)
        t_loop = time.perf_counter() - t0
        batched = attribute(m, g, pairs, method="exact")
        t_batched = median_time(lambda: attribute(m, g, pairs, method="exact"), max(1, repeats // 4), warmup=False)
        out.append({"n_layers": n_layers, "n_heads": n_heads, "n_edges": g.n_edges, "eap_seconds": t_eap,
                    "exact_loop_seconds": t_loop, "exact_batched_seconds": t_batched,
                    "exact_batched_passes": batched.info["forward_passes"], "batched_speedup": t_loop / t_batched,
                    "exact_loop_over_eap": t_loop / t_eap, "exact_batched_over_eap": t_batched / t_eap,
                    "batched_max_abs_difference": float((batched.values - loop.values).abs().max())})
    return out


class _PeakRSS:
    """Peak resident memory of this process while the block runs, minus the resident memory at its
    start (sampled every 2 ms from ``/proc/self/statm``; Linux only, else ``None``)."""

    def __enter__(self) -> _PeakRSS:
        import threading

        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.start = self.peak = self._rss()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.002):
                r = self._rss()
                if r is not None and self.peak is not None:
                    self.peak = max(self.peak, r)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page
        except OSError:
            return None

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def extra_mib(self) -> float | None:
        return None if self.start is None or self.peak is None else (self.peak - self.start) / 2**20


def _random_pairs(vocab: int, n: int, pos: int, seed: int) -> PromptPairs:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (n, pos), generator=g)
    corrupted = clean.clone()
    corrupted[:, pos // 2] = torch.randint(0, vocab, (n,), generator=g)  # one token differs, as in a prompt pair
    return PromptPairs(clean, corrupted, torch.randint(0, vocab, (n, 2), generator=g), "random")


def bench_gpt2_small(repeats: int, n_prompts: int, pos: int, exact_prompts: int) -> dict[str, Any]:
    """EAP on a GPT-2-small-shaped model (12 layers x 12 heads, d_model 768, vocab 50257; random init,
    built with ``transformers`` and converted by :func:`mechnb.interop.from_hf`) on ``n_prompts``
    random prompt pairs of ``pos`` tokens: seconds, the extra peak resident memory, and EAP against its
    floor of 2 forward + 1 backward passes (one corrupted forward, one clean forward + backward to the
    embedding; the goal: EAP <= 2x the floor). Then exact patching (batched) against EAP on a 2-layer
    slice of the same width (``exact_prompts`` prompts)."""
    import gc

    import transformers

    from mechnb.interop import from_hf

    transformers.logging.set_verbosity_error()

    def build(n_layer: int) -> TinyTransformer:
        torch.manual_seed(0)
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=n_layer, bos_token_id=0, eos_token_id=0))
        model = from_hf(hf)
        for p in model.parameters():
            p.requires_grad_(False)  # like a pretrained model under analysis: no parameter gradients
        del hf
        gc.collect()
        return model

    model = build(12)
    graph = Graph.from_model(model)
    pairs = _random_pairs(model.vocab_size, n_prompts, pos, seed=0)

    def floor() -> None:
        with torch.no_grad():
            model(pairs.corrupted)
        emb: dict[str, torch.Tensor] = {}

        def leaf(x: torch.Tensor, hook: object) -> torch.Tensor:
            emb["x"] = x.detach().requires_grad_(True)
            return emb["x"]

        with torch.enable_grad(), model.hooks([("hook_embed", leaf)]):
            value = logit_diff(model(pairs.clean), pairs)
            torch.autograd.grad(value, emb["x"])

    with _PeakRSS() as mem:
        attribute(model, graph, pairs, method="eap")
    with _PeakRSS() as mem_floor:
        floor()
    with torch.no_grad():
        t_fwd = median_time(lambda: model(pairs.clean), repeats, warmup=False)
    t_eap = median_time(lambda: attribute(model, graph, pairs, method="eap"), repeats, warmup=False)
    t_floor = median_time(floor, repeats, warmup=False)
    big = {"n_layers": 12, "n_heads": 12, "d_model": model.d_model, "n_edges": graph.n_edges,
           "n_prompts": n_prompts, "pos": pos, "forward_seconds": t_fwd, "eap_seconds": t_eap,
           "eap_peak_extra_mib": mem.extra_mib, "floor_peak_extra_mib": mem_floor.extra_mib,
           "floor_seconds": t_floor, "eap_times_floor": t_eap / t_floor, "within_2x_floor": t_eap <= 2 * t_floor}
    del model
    gc.collect()
    small = build(2)
    g2 = Graph.from_model(small)
    p2 = _random_pairs(small.vocab_size, exact_prompts, pos, seed=1)
    t_eap2 = median_time(lambda: attribute(small, g2, p2, method="eap"), repeats, warmup=False)
    t0 = time.perf_counter()
    exact = attribute(small, g2, p2, method="exact")
    t_exact2 = time.perf_counter() - t0
    slice_ = {"n_layers": 2, "n_edges": g2.n_edges, "n_prompts": exact_prompts, "eap_seconds": t_eap2,
              "exact_batched_seconds": t_exact2, "exact_passes": exact.info["forward_passes"],
              "exact_over_eap": t_exact2 / t_eap2}
    return {"gpt2_small": big, "two_layer_slice": slice_}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not for reporting)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--no-scaling", action="store_true", help="skip the random-init scaling section")
    ap.add_argument("--gpt2-small", action="store_true",
                    help="only the GPT-2-small-shaped section (EAP on 12 x 12, random init; needs transformers)")
    ap.add_argument("--reduced", action="store_true",
                    help="with --gpt2-small: 8 prompts, 1 repeat, 2 prompts for the exact slice (a busy machine)")
    args = ap.parse_args(argv)
    repeats, exact_repeats = (3, 1) if args.quick else (21, 5)
    if args.gpt2_small:
        return _main_gpt2_small(args)
    torch.manual_seed(0)
    model, source = load_model(args.device)
    graph = Graph.from_model(model)
    lang = SyntheticLanguage()
    tasks = {
        "agreement": lang.agreement_prompts(args.n_prompts, seed=7).to(args.device),
        "gender-occupation": lang.gender_prompts(args.n_prompts, seed=7, subject="occupation").to(args.device),
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result: dict[str, Any] = {
        "benchmark": "circuits: EAP / EAP-IG vs exact patching (batched and per-edge loop), ACDC",
        "model": source, "device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.platform(), "load_average_1min_at_start": load, "quick": args.quick,
        "repeats": repeats, "exact_repeats": exact_repeats,
        "goals": {"exact batched vs loop": ">= 5x on tiny-lm (110 edges) and on the 1519-edge model",
                  "batched equals loop": "<= 1e-5"},
        "tasks": {},
    }
    print(f"model: {source}; graph: {graph}; load average {load}")
    header = f"{'task':<18} {'method':<14} {'time (ms)':>10} {'fwd-equiv':>9} {'exact/method':>12} " \
             f"{'spearman':>8} {'|s| spearman':>12} {'top-20':>7}"
    print(header)
    print("-" * len(header))
    for name, pairs in tasks.items():
        r = bench_task(model, graph, pairs, repeats, exact_repeats, ig_steps=[5, 20])
        result["tasks"][name] = r
        print(f"{name:<18} {'exact (loop)':<14} {1e3 * r['exact_loop_seconds']:>10.1f} "
              f"{r['exact_loop_forward_equivalents']:>9.1f}")
        print(f"{'':<18} {'exact (batched)':<14} {1e3 * r['exact_batched_seconds']:>10.1f} "
              f"{r['exact_batched_forward_equivalents']:>9.1f}   batched {r['batched_speedup']:.1f}x faster "
              f"({r['exact_batched_passes']} passes), max |difference| {r['batched_max_abs_difference']:.1e}")
        a = r["acdc"]
        print(f"{'':<18} {'acdc':<14} {1e3 * a['seconds']:>10.1f} {a['forward_equivalents']:>9.1f}   "
              f"{a['forward_passes']} forward passes, {a['circuit_edges']} edges kept")
        for m, row in r["methods"].items():
            print(f"{'':<18} {m:<14} {1e3 * row['seconds']:>10.1f} {row['forward_equivalents']:>9.1f} "
                  f"{row['speedup_vs_exact_batched']:>12.1f} {row['spearman']:>8.3f} {row['spearman_abs']:>12.3f} "
                  f"{row['top20_overlap']:>7.2f}")
        e = r["methods"]["eap"]
        print(f"{'':<18} EAP floor (2 fwd + 1 bwd): {1e3 * e['floor_seconds']:.1f} ms = "
              f"{e['floor_forward_equivalents']:.1f} fwd-equiv; EAP = {e['times_floor']:.2f}x its floor")
    if not args.no_scaling:
        result["scaling"] = bench_scaling(args.device, repeats)
        print("\nscaling (random init, timing only):")
        for s in result["scaling"]:
            print(f"  {s['n_layers']} layers x {s['n_heads']} heads: {s['n_edges']:>5} edges, "
                  f"EAP {1e3 * s['eap_seconds']:.1f} ms, exact loop {s['exact_loop_seconds']:.2f} s, "
                  f"batched {s['exact_batched_seconds']:.2f} s ({s['batched_speedup']:.1f}x, max |difference| "
                  f"{s['batched_max_abs_difference']:.1e})")
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result["load_average_1min_at_end"] = load_end
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("circuits_quick.json" if args.quick else "circuits.json")
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out} (load average at the end {load_end})")
    return 0


def _main_gpt2_small(args: argparse.Namespace) -> int:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    n, repeats, exact_n = (8, 1, 2) if args.reduced else (args.n_prompts, 3, 8)
    res = bench_gpt2_small(repeats, n, 16, exact_n)
    res.update({"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.platform(),
                "reduced": args.reduced, "load_average_1min_at_start": load,
                "load_average_1min_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None})
    b, s = res["gpt2_small"], res["two_layer_slice"]
    print(f"GPT-2-small shape (12 x 12, {b['n_edges']} edges), {b['n_prompts']} prompts x {b['pos']} tokens: "
          f"EAP {b['eap_seconds']:.2f} s (forward {b['forward_seconds']:.2f} s), peak +{b['eap_peak_extra_mib']:.0f} MiB; "
          f"floor 2 fwd + 1 bwd {b['floor_seconds']:.2f} s (+{b['floor_peak_extra_mib']:.0f} MiB): "
          f"EAP = {b['eap_times_floor']:.2f}x floor ({'within' if b['within_2x_floor'] else 'NOT within'} 2x)")
    print(f"2-layer slice ({s['n_edges']} edges, {s['n_prompts']} prompts): exact batched {s['exact_batched_seconds']:.1f} s "
          f"({s['exact_passes']} passes) vs EAP {s['eap_seconds']:.2f} s = {s['exact_over_eap']:.0f}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("circuits_gpt2_small_reduced.json" if args.reduced else "circuits_gpt2_small.json")
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out} (load average {load} at the start)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
