"""The computational graph of a :class:`~mechnb.models.TinyTransformer` and edge-level patching.

A *node* is a component that writes to the residual stream (``input`` = token + position
embedding, every attention head ``a{l}.h{h}``, every MLP ``m{l}``) or reads from it (every
head's query, key and value input, every MLP input, and ``logits``, which reads the last
``resid_post`` through ``ln_final`` and the unembedding). Because the residual stream is a
sum, the input a reader sees is the sum of the outputs of all writers upstream of it (plus
constant biases), so an *edge* ``u -> v`` is one term of that sum (Elhage et al. 2021;
the graph of Conmy et al. 2023 / Hanna et al. 2024).

Patching an edge replaces that one term by its value on a reference input (the corrupted
prompt, or the mean activation)::

    input_v(patched) = input_v - sum_{u: (u -> v) ablated} alpha_uv * (out_u - ref_u)

with ``alpha_uv`` = 1 for an ablated edge and 0 for a kept one. ``out_u`` is ``u``'s output in
the *current* (patched) forward pass, so patches compose: with every edge ablated each reader
sees exactly the reference residual stream, with none ablated the model is unchanged.
``alpha`` may be any real tensor, which makes the metric a differentiable function of per-edge
masks (used to check that EAP is the gradient with respect to them).

Writers are indexed ``0..n_writers-1`` in forward order (``input``, then per layer its heads and
its MLP); readers ``0..n_readers-1`` (per layer: ``H`` query inputs, ``H`` key inputs, ``H`` value
inputs, the MLP input; then ``logits``). Scores and masks are ``[n_writers, n_readers]`` matrices
with ``graph.valid`` marking the real edges (writer strictly upstream of reader). In a model with
parallel attention and MLP (GPT-NeoX / Pythia, ``parallel=True``) the MLP of layer ``l`` reads the
block's input, so the heads of layer ``l`` are not upstream of ``m{l}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mechnb._checks import check_float_input, check_tensor, model_dtype
from mechnb.io import saveable
from mechnb.models import TinyTransformer

__all__ = ["Edge", "Graph", "WriterCache", "cache_writers", "patched_forward", "patched_logits", "reader_gradients",
           "check_reference",
           "check_metric_value"]

QKV = ("q", "k", "v")


@dataclass(frozen=True)
class Edge:
    """One edge ``src -> dst``; ``letter`` is ``"q"``, ``"k"`` or ``"v"`` for a head reader, else ``""``.

    ``name`` follows the EAP-IG convention: ``"input->a1.h0<q>"``, ``"a0.h2->m0"``.
    """

    src: str
    dst: str
    letter: str = ""

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}" + (f"<{self.letter}>" if self.letter else "")

    def __str__(self) -> str:
        return self.name


@saveable()
class Graph:
    """Nodes and edges of a :class:`TinyTransformer` (build it with :meth:`from_model`).

    Attributes:
        n_layers, n_heads, attn_only: the architecture the graph describes.
        writers: writer node names in forward order (``input``, ``a0.h0``, ..., ``m0``, ...).
        readers: ``(node, letter)`` per reader slot, e.g. ``("a1.h0", "q")``, ``("m0", "")``,
            ``("logits", "")``.
        nodes: every node name in forward order (``input`` first, ``logits`` last).
        valid: ``[n_writers, n_readers]`` bool, ``True`` where an edge exists.
        edges: the list of :class:`Edge` (row-major over ``valid``).
    """

    def __init__(self, n_layers: int, n_heads: int, attn_only: bool = False, parallel: bool = False) -> None:
        self.n_layers, self.n_heads, self.attn_only = int(n_layers), int(n_heads), bool(attn_only)
        self.parallel = bool(parallel)  # each MLP reads its block's input: no head of layer l is upstream of m{l}
        H = self.n_heads
        writers = ["input"]
        readers: list[tuple[str, str]] = []
        reader_layer_first_writer: list[int] = []  # number of writers upstream of each reader
        self._writer_first: list[int] = []  # index of first head writer of each layer
        self._reader_first: list[int] = []  # index of first reader of each layer
        for layer in range(self.n_layers):
            self._writer_first.append(len(writers))
            self._reader_first.append(len(readers))
            n_up = len(writers)
            for letter in QKV:
                for h in range(H):
                    readers.append((f"a{layer}.h{h}", letter))
                    reader_layer_first_writer.append(n_up)
            writers += [f"a{layer}.h{h}" for h in range(H)]
            if not self.attn_only:
                readers.append((f"m{layer}", ""))
                reader_layer_first_writer.append(n_up if self.parallel else len(writers))
                writers.append(f"m{layer}")
        readers.append(("logits", ""))
        reader_layer_first_writer.append(len(writers))
        self.writers: list[str] = writers
        self.readers: list[tuple[str, str]] = readers
        self.n_upstream = torch.tensor(reader_layer_first_writer)
        self.valid = torch.arange(len(writers))[:, None] < self.n_upstream[None, :]
        self.writer_index = {w: i for i, w in enumerate(writers)}
        self.reader_index = {r: i for i, r in enumerate(readers)}
        self.nodes: list[str] = writers + ["logits"]
        self.edges: list[Edge] = [
            Edge(writers[i], readers[j][0], readers[j][1]) for i, j in self.valid.nonzero().tolist()
        ]
        self.edge_index = {e.name: k for k, e in enumerate(self.edges)}

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_model(cls, model: TinyTransformer) -> Graph:
        """The graph of ``model`` (nodes ``input``, ``a{l}.h{h}``, ``m{l}``, ``logits``)."""
        if not isinstance(model, TinyTransformer):
            raise TypeError(f"model: expected a mechnb.models.TinyTransformer, got {type(model).__name__}")
        return cls(model.n_layers, model.n_heads, model.attn_only, model.parallel_attn_mlp)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, so ``Graph(**g.config())`` rebuilds the graph (used by
        :meth:`Circuit.to_json` and :func:`mechnb.io.save`)."""
        cfg: dict[str, Any] = {"n_layers": self.n_layers, "n_heads": self.n_heads, "attn_only": self.attn_only}
        if self.parallel:
            cfg["parallel"] = True
        return cfg

    def to_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """For :func:`mechnb.io.save`: no tensors (the edges follow from the architecture) and :meth:`config`."""
        return {}, self.config()

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Graph:
        """The graph :meth:`to_state` describes."""
        return cls(**meta)

    # -- sizes ------------------------------------------------------------------------
    @property
    def n_writers(self) -> int:
        return len(self.writers)

    @property
    def n_readers(self) -> int:
        return len(self.readers)

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def __repr__(self) -> str:
        par = ", parallel=True" if self.parallel else ""
        return (f"Graph(n_layers={self.n_layers}, n_heads={self.n_heads}, attn_only={self.attn_only}{par}: "
                f"{self.n_nodes} nodes, {self.n_edges} edges)")

    # -- helpers ----------------------------------------------------------------------
    def reader_slot(self, node: str, letter: str = "") -> int:
        """Column index of reader ``(node, letter)`` in score / mask matrices."""
        key = (node, letter)
        if key not in self.reader_index:
            raise KeyError(f"reader {node!r}{'<' + letter + '>' if letter else ''} is not in the graph")
        return self.reader_index[key]

    def edge_matrix(self, values: torch.Tensor) -> torch.Tensor:
        """Scatter per-edge ``values (n_edges,)`` into a ``[n_writers, n_readers]`` matrix (0 off-graph)."""
        check_tensor("values", values, shape=(self.n_edges,), dims="(n_edges,)", finite=False)
        out = torch.zeros(self.n_writers, self.n_readers, dtype=values.dtype, device=values.device)
        out[self.valid.to(values.device)] = values
        return out

    def edge_vector(self, matrix: torch.Tensor) -> torch.Tensor:
        """Gather a ``[n_writers, n_readers]`` matrix into per-edge values ``(n_edges,)`` (edge order)."""
        check_tensor("matrix", matrix, shape=(self.n_writers, self.n_readers), finite=False)
        return matrix[self.valid.to(matrix.device)]

    def node_layer(self, node: str) -> float:
        """Vertical position for drawing: input -1, heads of layer l at l, MLP l at l+0.5, logits L."""
        if node == "input":
            return -1.0
        if node == "logits":
            return float(self.n_layers)
        if node.startswith("m"):
            return int(node[1:]) + 0.5
        return float(int(node[1:].split(".")[0]))

    def check_model(self, model: TinyTransformer) -> None:
        if not isinstance(model, TinyTransformer):
            raise TypeError(f"model: expected a mechnb.models.TinyTransformer, got {type(model).__name__}")
        want = (self.n_layers, self.n_heads, self.attn_only, self.parallel)
        got = (model.n_layers, model.n_heads, model.attn_only, model.parallel_attn_mlp)
        if got != want:
            raise ValueError(
                f"model: expected (n_layers, n_heads, attn_only, parallel_attn_mlp)={want} to match the graph, got {got}"
            )


# --------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------
@dataclass
class WriterCache:
    """Writer outputs ``out [n_writers, batch, pos, d_model]`` of one forward pass, and its logits."""

    out: torch.Tensor
    logits: torch.Tensor
    embed: torch.Tensor | None = None  #: the token embedding ``[batch, pos, d_model]`` (``hook_embed``)


def _writer_hooks(graph: Graph, store: list[torch.Tensor | None], embed_override: Callable | None = None,
                  state: dict[str, torch.Tensor] | None = None) -> list:
    """Forward hooks that put each writer's output in ``store`` (index = writer index).

    ``embed_override(x)`` replaces the token embedding (``hook_embed``); ``state["embed"]``
    receives the embedding actually used.
    """
    H = graph.n_heads
    hooks: list = []
    state = {} if state is None else state

    def embed_hook(x: torch.Tensor, hook: object) -> torch.Tensor | None:
        if embed_override is not None:
            x = embed_override(x)
            state["embed"] = x
            store[0] = x  # the input writer of a model without position embedding (rotary)
            return x
        state["embed"] = x
        store[0] = x
        return None

    def pos_hook(x: torch.Tensor, hook: object) -> None:
        store[0] = state["embed"] + x

    # a rotary model has no hook_pos_embed: the name filter then matches nothing
    hooks += [("hook_embed", embed_hook), (lambda name: name == "hook_pos_embed", pos_hook)]
    for layer in range(graph.n_layers):
        first = graph._writer_first[layer]

        def result_hook(x: torch.Tensor, hook: object, first: int = first) -> None:
            for h in range(H):
                store[first + h] = x[:, :, h]

        hooks.append((f"blocks.{layer}.attn.hook_result", result_hook))
        if not graph.attn_only:

            def mlp_hook(x: torch.Tensor, hook: object, idx: int = first + H) -> None:
                store[idx] = x

            hooks.append((f"blocks.{layer}.hook_mlp_out", mlp_hook))
    return hooks


def _reader_hook_names(graph: Graph) -> list[tuple[str, list[int], bool]]:
    """``(hook name, reader indices, per_head)`` for every reader hook point, in forward order."""
    H = graph.n_heads
    out: list[tuple[str, list[int], bool]] = []
    for layer in range(graph.n_layers):
        first = graph._reader_first[layer]
        for i, letter in enumerate(QKV):
            out.append((f"blocks.{layer}.attn.hook_{letter}_input", list(range(first + i * H, first + (i + 1) * H)),
                        True))
        if not graph.attn_only:
            out.append((f"blocks.{layer}.hook_mlp_in", [first + 3 * H], False))
    out.append((f"blocks.{graph.n_layers - 1}.hook_resid_post", [graph.n_readers - 1], False))
    return out


def cache_writers(
    model: TinyTransformer, graph: Graph, tokens: torch.Tensor, embed_override: Callable | None = None
) -> WriterCache:
    """One forward pass (no grad) returning every writer's output ``[n_writers, b, p, d_model]``."""
    store: list[torch.Tensor | None] = [None] * graph.n_writers
    state: dict[str, torch.Tensor] = {}
    with torch.no_grad(), model.hooks(_writer_hooks(graph, store, embed_override, state)):
        logits = model(tokens)
    return WriterCache(torch.stack(store, 0), logits, state["embed"])  # type: ignore[arg-type]


@contextlib.contextmanager
def _patch_hooks(
    model: TinyTransformer, graph: Graph, ref: torch.Tensor, alpha: torch.Tensor
) -> Iterator[list[torch.Tensor | None]]:
    """Install hooks that patch edges: ``input_v -= sum_u alpha[u, v] (out_u - ref[u])``.

    ``ref``: ``[n_writers, b or 1, p, d_model]``; ``alpha``: ``[n_writers, n_readers]`` (real;
    entries off ``graph.valid`` are ignored). Readers whose ``alpha`` column is all zero are
    left untouched (cheap when few edges are patched).
    """
    store: list[torch.Tensor | None] = [None] * graph.n_writers
    alpha = alpha * graph.valid.to(alpha.device, alpha.dtype)
    active = (alpha != 0).any(0).tolist() if not alpha.requires_grad else [True] * graph.n_readers
    hooks = _writer_hooks(graph, store)
    # without autograd, each writer's out_u - ref_u is computed once into a buffer [n_writers, b, p, d]
    # and every reader takes one matrix product with it; with autograd the differences are stacked
    # per reader (an in-place buffer would invalidate what backward needs)
    buffered = not torch.is_grad_enabled()
    diffs: dict[str, Any] = {"D": None, "done": 0}

    def differences(n_up: int) -> torch.Tensor:
        if not buffered:
            return torch.stack(store[:n_up], 0) - ref[:n_up]  # type: ignore[arg-type]
        if diffs["D"] is None:
            first = store[0]
            assert first is not None
            diffs["D"] = torch.empty((graph.n_writers, *first.shape), dtype=first.dtype, device=first.device)
        D = diffs["D"]
        for u in range(diffs["done"], n_up):
            torch.sub(store[u], ref[u], out=D[u])  # type: ignore[arg-type]
        diffs["done"] = max(diffs["done"], n_up)
        return D[:n_up]

    for name, idx, per_head in _reader_hook_names(graph):
        if not any(active[i] for i in idx):
            continue
        n_up = int(graph.n_upstream[idx[0]])

        def reader_hook(x: torch.Tensor, hook: object, idx: list[int] = idx, n_up: int = n_up,
                        per_head: bool = per_head) -> torch.Tensor:
            diff = differences(n_up)  # [n_up, b, p, d]
            a = alpha[:n_up, idx[0]: idx[-1] + 1].to(diff.dtype)  # [n_up, H] or [n_up, 1]
            b, p, d = diff.shape[1:]
            corr = a.T @ diff.reshape(n_up, -1)  # [H, b*p*d]: the sum over writers as one product
            if per_head:
                return x - corr.reshape(-1, b, p, d).permute(1, 2, 0, 3)
            return x - corr.reshape(b, p, d)

        hooks.append((name, reader_hook))
    with model.hooks(hooks):
        yield store


def check_metric_value(value: Any, where: str) -> torch.Tensor:
    """A metric's return value as a real 0-d tensor, or an error naming ``metric``.

    ``where`` says on which prompts it was evaluated (for the message). A vector-valued metric
    raises ``ValueError`` (a metric must reduce over the batch, e.g. a mean), a non-numeric one
    ``TypeError``, and NaN or inf ``ValueError``: a NaN metric would silently give NaN scores.
    """
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        value = torch.tensor(float(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"metric: expected a function returning a scalar tensor, got a {type(value).__name__} "
                        f"{where}")
    if value.numel() != 1:
        raise ValueError(f"metric: expected a scalar (e.g. the batch mean), got a tensor of shape "
                         f"{tuple(value.shape)} {where}")
    if value.is_complex() or not value.is_floating_point():
        raise TypeError(f"metric: expected a real floating-point scalar, got dtype {value.dtype} {where}")
    value = value.reshape(())
    if not bool(torch.isfinite(value.detach())):
        raise ValueError(f"metric: expected a finite value, got {float(value)} {where}")
    return value


def check_reference(ref: torch.Tensor, graph: Graph, tokens: torch.Tensor, d_model: int) -> None:
    """``ValueError`` naming ``ref`` unless it is ``[n_writers, batch or 1, pos or 1, d_model]`` for ``tokens``."""
    check_tensor("ref", ref, ndim=4, dims="(n_writers, batch, pos, d_model)", floating=True)
    b, p = tokens.shape
    if (ref.shape[0] != graph.n_writers or ref.shape[1] not in (1, b) or ref.shape[2] not in (1, p)
            or ref.shape[3] != d_model):
        raise ValueError(f"ref: expected shape ({graph.n_writers}, {b} or 1, {p} or 1, {d_model}) "
                         f"(n_writers, batch, pos, d_model), got {tuple(ref.shape)}")


def patched_forward(
    model: TinyTransformer, graph: Graph, tokens: torch.Tensor, ref: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """Logits of ``model(tokens)`` with edges patched towards ``ref`` with strengths ``alpha``.

    Args:
        tokens: ``(batch, pos)`` int64.
        ref: reference writer outputs ``[n_writers, batch or 1, pos or 1, d_model]`` (e.g. a
            :func:`cache_writers` of the corrupted prompts, or a mean over prompts; see
            :func:`~mechnb.circuits.ablation.ablation_reference`).
        alpha: ``[n_writers, n_readers]``; 1 = edge ablated (reader sees ``ref_u``), 0 = kept.
            Differentiable (gradients flow to ``alpha`` if it requires grad).

    Floating ``ref`` and ``alpha`` of another dtype are cast to the model's dtype; integer or
    complex ones raise ``TypeError``.

    Returns:
        logits ``(batch, pos, d_vocab)``.
    """
    graph.check_model(model)
    check_tensor("tokens", tokens, ndim=2, dims="(batch, pos)", floating=False)
    dtype, device = model_dtype(model), next(model.parameters()).device
    check_tensor("alpha", alpha, shape=(graph.n_writers, graph.n_readers), dims="(n_writers, n_readers)")
    alpha = check_float_input("alpha", alpha, dtype).to(device)
    check_tensor("ref", ref, ndim=4, dims="(n_writers, batch, pos, d_model)")
    ref = check_float_input("ref", ref, dtype).to(device)
    check_reference(ref, graph, tokens, model.d_model)
    return patched_logits(model, graph, tokens, ref, alpha)


def patched_logits(model: TinyTransformer, graph: Graph, tokens: torch.Tensor, ref: torch.Tensor,
                   alpha: torch.Tensor) -> torch.Tensor:
    """:func:`patched_forward` without its input checks, for loops that checked ``ref`` once
    (ACDC, faithfulness curves, the per-edge exact loop): ``ref`` and ``alpha`` must already be in
    the model's dtype and on its device."""
    with _patch_hooks(model, graph, ref, alpha):
        return model(tokens)


def reader_gradients(
    model: TinyTransformer,
    graph: Graph,
    tokens: torch.Tensor,
    metric_of_logits: Callable[[torch.Tensor], torch.Tensor],
    embed_override: Callable | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward + one backward: ``(writer outputs, d metric / d reader inputs, metric)``.

    Returns ``out [n_writers, b, p, d]``, ``grad [n_readers, b, p, d]`` and the metric value.
    Parameter gradients are not computed (``torch.autograd.grad`` on the reader inputs only).
    """
    store: list[torch.Tensor | None] = [None] * graph.n_writers
    reader_inputs: list[tuple[list[int], bool, torch.Tensor]] = []

    def embed_leaf(x: torch.Tensor) -> torch.Tensor:
        # the residual stream is tracked from the embedding on, whether or not parameters require grad
        x = embed_override(x) if embed_override is not None else x
        return x.detach().requires_grad_(True)

    hooks = _writer_hooks(graph, store, embed_leaf)
    for name, idx, per_head in _reader_hook_names(graph):

        def reader_hook(x: torch.Tensor, hook: object, idx: list[int] = idx, per_head: bool = per_head) -> torch.Tensor:
            y = x.clone()  # q/k/v inputs share one tensor: a clone per reader keeps their gradients apart
            reader_inputs.append((idx, per_head, y))
            return y

        hooks.append((name, reader_hook))
    with torch.enable_grad(), model.hooks(hooks):
        logits = model(tokens)
        value = check_metric_value(metric_of_logits(logits), "on the prompts being differentiated")
        if not value.requires_grad:
            raise ValueError("metric: expected a differentiable function of the logits (EAP needs its gradient), "
                             "got a value that does not depend on them")
        grads = torch.autograd.grad(value, [t for _, _, t in reader_inputs], allow_unused=True)
    b, p = tokens.shape
    d = store[0].shape[-1]  # type: ignore[union-attr]
    G = torch.zeros(graph.n_readers, b, p, d, device=logits.device, dtype=store[0].dtype)  # type: ignore[union-attr]
    for (idx, per_head, _), g in zip(reader_inputs, grads):
        if g is None:
            continue
        if per_head:
            G[idx[0]: idx[-1] + 1] = g.permute(2, 0, 1, 3)
        else:
            G[idx[0]] = g
    out = torch.stack([s.detach() for s in store], 0)  # type: ignore[union-attr]
    return out, G, value.detach()
