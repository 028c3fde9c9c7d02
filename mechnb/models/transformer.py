"""The transformer: :class:`TinyTransformer` in TransformerLens conventions, and its parts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mechnb._checks import (
    check_choice, check_positive_float, check_positive_int, check_seed, check_tensor,
)
from mechnb.models.hooks import HookPoint, _HookedMixin, _name_hook_points

__all__ = ["LayerNorm", "Attention", "MLPBlock", "TransformerBlock", "TinyTransformer"]


# --------------------------------------------------------------------------------------
# Tiny transformer (TransformerLens conventions)
# --------------------------------------------------------------------------------------
class LayerNorm(nn.Module):
    """LayerNorm with TransformerLens parameter names ``w`` and ``b``.

    Works on any tensor whose last dimension is ``d_model`` (so it can normalise the split
    per-head q/k/v inputs ``(batch, pos, n_heads, d_model)`` too).
    """

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b


class Attention(nn.Module):
    """Multi-head causal self-attention with per-head q/k/v inputs and per-head results.

    Weights: ``W_Q, W_K, W_V [n_heads, d_model, d_head]``, ``W_O [n_heads, d_head, d_model]``,
    biases ``b_Q, b_K, b_V [n_heads, d_head]``, ``b_O [d_model]``.

    Hook points (``blocks.{l}.attn.*``): ``hook_q_input``/``hook_k_input``/``hook_v_input``
    ``[batch, pos, n_heads, d_model]`` (the residual stream each head reads, *before* ln1),
    ``hook_q``/``hook_k``/``hook_v`` ``[batch, pos, n_heads, d_head]``, ``hook_attn_scores`` /
    ``hook_pattern`` ``[batch, n_heads, query_pos, key_pos]``, ``hook_z`` and ``hook_result``
    ``[batch, pos, n_heads, d_model]`` (each head's contribution to the residual stream,
    without ``b_O``).
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, n_ctx: int, rotary_dim: int = 0,
                 rotary_base: float = 10000.0) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.rotary_dim = int(rotary_dim)
        if self.rotary_dim:
            # RoFormer (Su et al. 2021, Eq. 34) on the first rotary_dim dims of each head, halves rotated
            # against each other (GPT-NeoX layout): frequencies base^(-2i/rotary_dim), i < rotary_dim/2
            inv_freq = 1.0 / (rotary_base ** (torch.arange(0, self.rotary_dim, 2, dtype=torch.float32) / self.rotary_dim))
            self.register_buffer("inv_freq", inv_freq, persistent=False)
            self.hook_rot_q = HookPoint()
            self.hook_rot_k = HookPoint()
        self.W_Q = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_K = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_V = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_O = nn.Parameter(torch.empty(n_heads, d_head, d_model))
        self.b_Q = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_K = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_V = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_O = nn.Parameter(torch.zeros(d_model))
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False)
        for name in ("q_input", "k_input", "v_input", "q", "k", "v", "attn_scores", "pattern", "z", "result"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, resid: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        split = resid.unsqueeze(2).expand(-1, -1, self.n_heads, -1)  # [b, p, h, d_model]
        q_in = ln(self.hook_q_input(split))
        k_in = ln(self.hook_k_input(split))
        v_in = ln(self.hook_v_input(split))
        q = self.hook_q(torch.einsum("bphd,hde->bphe", q_in, self.W_Q) + self.b_Q)
        k = self.hook_k(torch.einsum("bphd,hde->bphe", k_in, self.W_K) + self.b_K)
        v = self.hook_v(torch.einsum("bphd,hde->bphe", v_in, self.W_V) + self.b_V)
        if self.rotary_dim:
            q = self.hook_rot_q(self.rotate(q, pos_dim=1))
            k = self.hook_rot_k(self.rotate(k, pos_dim=1))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.d_head)
        n = resid.shape[1]
        scores = scores.masked_fill(~self.mask[:n, :n], float("-inf"))
        pattern = self.hook_pattern(torch.softmax(self.hook_attn_scores(scores), dim=-1))
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        return self.hook_result(torch.einsum("bqhe,hed->bqhd", z, self.W_O))  # [b, p, h, d_model]

    def rotate(self, x: torch.Tensor, pos_dim: int) -> torch.Tensor:
        """Rotary position embedding of queries or keys ``x [..., d_head]`` whose dimension ``pos_dim``
        is the position (0, 1, ...); the identity without rotary embeddings.

        The first ``rotary_dim`` features are split into halves ``x1, x2`` and rotated pairwise,
        ``(x1 cos - x2 sin, x2 cos + x1 sin)`` with angle ``pos * inv_freq[i]`` (Su et al. 2021,
        Eq. 34, the half-split layout of GPT-NeoX); the remaining features pass unchanged.
        """
        if not self.rotary_dim:
            return x
        n, r = x.shape[pos_dim], self.rotary_dim
        freqs = torch.outer(torch.arange(n, device=x.device, dtype=torch.float32), self.inv_freq)  # [n, r/2]
        emb = torch.cat([freqs, freqs], dim=-1)  # [n, r]
        shape = [1] * x.ndim
        shape[pos_dim], shape[-1] = n, r
        cos, sin = emb.cos().to(x.dtype).view(shape), emb.sin().to(x.dtype).view(shape)
        x_rot, x_pass = x[..., :r], x[..., r:]
        x1, x2 = x_rot[..., : r // 2], x_rot[..., r // 2:]
        rotated = torch.cat([-x2, x1], dim=-1)
        return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)


_TRANSFORMER_ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU: mechnb's own models and GPT-NeoX / Pythia
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's tanh approximation
    "relu": F.relu,
}


class MLPBlock(nn.Module):
    """Transformer MLP: ``W_in [d_model, d_mlp]``, ``b_in``, activation, ``W_out [d_mlp, d_model]``, ``b_out``.

    ``act_fn``: ``"gelu"`` (exact, the default), ``"gelu_new"`` (tanh approximation, GPT-2) or ``"relu"``.
    """

    def __init__(self, d_model: int, d_mlp: int, act_fn: str = "gelu") -> None:
        super().__init__()
        self.act_fn = act_fn
        self._act = _TRANSFORMER_ACTS[act_fn]
        self.W_in = nn.Parameter(torch.empty(d_model, d_mlp))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.empty(d_mlp, d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        post = self.hook_post(self._act(self.hook_pre(x @ self.W_in + self.b_in)))
        return post @ self.W_out + self.b_out


class TransformerBlock(nn.Module):
    """Pre-LN block: ``resid_mid = resid_pre + Σ_h result_h + b_O``; ``resid_post = resid_mid + mlp(ln2(resid_mid))``.

    With ``parallel`` (GPT-J / GPT-NeoX) the MLP reads the block's input instead:
    ``resid_post = resid_mid + mlp(ln2(resid_pre))`` (``hook_mlp_in`` is then ``resid_pre``), so no
    head of this layer is upstream of its MLP.
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, d_mlp: int, n_ctx: int, attn_only: bool,
                 act_fn: str = "gelu", parallel: bool = False, ln_eps: float = 1e-5, rotary_dim: int = 0,
                 rotary_base: float = 10000.0) -> None:
        super().__init__()
        self.attn_only = attn_only
        self.parallel = parallel
        self.ln1 = LayerNorm(d_model, ln_eps)
        self.attn = Attention(d_model, n_heads, d_head, n_ctx, rotary_dim, rotary_base)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()
        if not attn_only:
            self.ln2 = LayerNorm(d_model, ln_eps)
            self.mlp = MLPBlock(d_model, d_mlp, act_fn)
            self.hook_mlp_in = HookPoint()
            self.hook_mlp_out = HookPoint()

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        resid_pre = resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.attn(resid, self.ln1).sum(dim=2) + self.attn.b_O)
        resid = self.hook_resid_mid(resid + attn_out)
        if not self.attn_only:
            mlp_out = self.hook_mlp_out(self.mlp(self.ln2(self.hook_mlp_in(resid_pre if self.parallel else resid))))
            resid = resid + mlp_out
        return self.hook_resid_post(resid)


class _TiedUnembed(nn.Module):
    """The unembedding of a model whose ``W_U`` *is* ``embed.W_E.T`` (a read-only view, GPT-2)."""

    def __init__(self, embed: nn.Module, bias: bool, d_vocab: int) -> None:
        super().__init__()
        object.__setattr__(self, "_embed", embed)  # not a submodule: W_E stays one parameter
        if bias:
            self.b_U = nn.Parameter(torch.zeros(d_vocab))
        else:
            self.register_parameter("b_U", None)

    @property
    def W_U(self) -> torch.Tensor:
        return self._embed.W_E.T


class TinyTransformer(_HookedMixin, nn.Module):
    """A small pre-LayerNorm GPT-style transformer in TransformerLens conventions.

    Parameters: ``embed.W_E [d_vocab, d_model]``, ``pos_embed.W_pos [n_ctx, d_model]``,
    ``blocks.{l}.attn.W_Q/W_K/W_V [n_heads, d_model, d_head]``, ``W_O [n_heads, d_head, d_model]``,
    ``blocks.{l}.mlp.W_in [d_model, d_mlp]``, ``W_out [d_mlp, d_model]``,
    ``ln_final``, ``unembed.W_U [d_model, d_vocab]``, ``unembed.b_U``.

    Residual writers (the nodes of a circuit graph): ``hook_embed + hook_pos_embed`` (the
    input), ``blocks.{l}.attn.hook_result[:, :, h]`` (head ``h``; ``b_O`` is a constant) and
    ``blocks.{l}.hook_mlp_out``. Readers: ``blocks.{l}.attn.hook_{q,k,v}_input[:, :, h]``,
    ``blocks.{l}.hook_mlp_in`` and ``blocks.{n_layers-1}.hook_resid_post`` (read by the
    unembedding). Every hook point can be read or patched with :meth:`run_with_hooks` /
    :meth:`run_with_cache`.

    Architecture options (the defaults are mechnb's own models; :func:`mechnb.interop.from_hf`
    sets them for GPT-2 and GPT-NeoX / Pythia):

    * ``act_fn``: the MLP nonlinearity, ``"gelu"`` (exact), ``"gelu_new"`` (tanh, GPT-2) or ``"relu"``.
    * ``positional``: ``"learned"`` (``pos_embed.W_pos`` added to the input, ``hook_pos_embed``) or
      ``"rotary"`` (no position embedding; queries and keys rotated on their first ``rotary_dim``
      features with base ``rotary_base``, hook points ``attn.hook_rot_q`` / ``hook_rot_k``). The
      ``input`` node of a circuit graph is then the token embedding alone.
    * ``parallel_attn_mlp``: each block's MLP reads the block's input, like its attention.
    * ``tied_unembed``: ``unembed.W_U`` is ``embed.W_E.T`` (one parameter); ``unembed_bias``: whether
      ``unembed.b_U`` exists (``None`` otherwise).
    * ``ln_eps``: the epsilon of every LayerNorm.

    Shapes: ``tokens (batch, pos)`` int64 with ``pos <= n_ctx`` -> logits ``(batch, pos, d_vocab)``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_mlp: int,
        n_ctx: int,
        attn_only: bool = False,
        d_head: int | None = None,
        init_seed: int | None = None,
        *,
        act_fn: str = "gelu",
        positional: str = "learned",
        rotary_dim: int | None = None,
        rotary_base: float = 10000.0,
        parallel_attn_mlp: bool = False,
        tied_unembed: bool = False,
        unembed_bias: bool = True,
        ln_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.d_model = check_positive_int("d_model", d_model)
        self.n_layers = check_positive_int("n_layers", n_layers)
        self.n_heads = check_positive_int("n_heads", n_heads)
        self.d_mlp = check_positive_int("d_mlp", d_mlp)
        self.n_ctx = check_positive_int("n_ctx", n_ctx)
        if d_head is None:
            if d_model % n_heads:
                raise ValueError(f"d_model: expected a multiple of n_heads={n_heads} (or pass d_head), got {d_model}")
            d_head = d_model // n_heads
        self.d_head = check_positive_int("d_head", d_head)
        self.attn_only = bool(attn_only)
        self.act_fn = check_choice("act_fn", act_fn, list(_TRANSFORMER_ACTS))
        self.positional = check_choice("positional", positional, ["learned", "rotary"])
        if self.positional == "rotary":
            rotary_dim = self.d_head if rotary_dim is None else check_positive_int("rotary_dim", rotary_dim)
            if rotary_dim > self.d_head or rotary_dim % 2:
                raise ValueError(f"rotary_dim: expected an even number <= d_head={self.d_head}, got {rotary_dim}")
            self.rotary_dim = int(rotary_dim)
        elif rotary_dim is not None:
            raise ValueError(f"rotary_dim: expected None with positional='learned', got {rotary_dim!r}")
        else:
            self.rotary_dim = 0
        self.rotary_base = check_positive_float("rotary_base", rotary_base)
        for name, flag in (("parallel_attn_mlp", parallel_attn_mlp), ("tied_unembed", tied_unembed),
                           ("unembed_bias", unembed_bias)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name}: expected a bool, got {type(flag).__name__} {flag!r}")
        self.parallel_attn_mlp, self.tied_unembed, self.unembed_bias = parallel_attn_mlp, tied_unembed, unembed_bias
        self.ln_eps = check_positive_float("ln_eps", ln_eps)

        self.embed = nn.Module()
        self.embed.W_E = nn.Parameter(torch.empty(vocab_size, d_model))
        if self.positional == "learned":
            self.pos_embed = nn.Module()
            self.pos_embed.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))
        self.hook_embed = HookPoint()
        if self.positional == "learned":
            self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, self.d_head, d_mlp, n_ctx, self.attn_only, self.act_fn,
                             self.parallel_attn_mlp, self.ln_eps, self.rotary_dim, self.rotary_base)
            for _ in range(n_layers)
        )
        self.ln_final = LayerNorm(d_model, self.ln_eps)
        if tied_unembed:
            self.unembed: nn.Module = _TiedUnembed(self.embed, unembed_bias, vocab_size)
        else:
            self.unembed = nn.Module()
            self.unembed.W_U = nn.Parameter(torch.empty(d_model, vocab_size))
            if unembed_bias:
                self.unembed.b_U = nn.Parameter(torch.zeros(vocab_size))
            else:
                self.unembed.register_parameter("b_U", None)
        if init_seed is not None:
            check_seed("init_seed", init_seed)
        self.reset_parameters(init_seed)
        _name_hook_points(self)

    _OPTION_DEFAULTS: dict[str, Any] = dict(act_fn="gelu", positional="learned", rotary_dim=None, rotary_base=10000.0,
                                            parallel_attn_mlp=False, tied_unembed=False, unembed_bias=True,
                                            ln_eps=1e-5)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, so ``TinyTransformer(**m.config())`` rebuilds the architecture.

        The architecture options appear only where they differ from their defaults (so the
        config of mechnb's own models is what it always was)."""
        cfg = dict(vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
                   d_mlp=self.d_mlp, n_ctx=self.n_ctx, attn_only=self.attn_only, d_head=self.d_head)
        options = dict(act_fn=self.act_fn, positional=self.positional,
                       rotary_dim=self.rotary_dim if self.positional == "rotary" else None,
                       rotary_base=self.rotary_base, parallel_attn_mlp=self.parallel_attn_mlp,
                       tied_unembed=self.tied_unembed, unembed_bias=self.unembed_bias, ln_eps=self.ln_eps)
        cfg.update({k: v for k, v in options.items() if v != self._OPTION_DEFAULTS[k]})
        return cfg

    def unembed_resid(self, resid: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., d_vocab)`` from the final residual stream ``resid (..., d_model)``:
        ``ln_final`` then ``W_U`` (and ``b_U`` when the model has one)."""
        logits = self.ln_final(resid) @ self.unembed.W_U
        return logits if self.unembed.b_U is None else logits + self.unembed.b_U

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """GPT-2 style init: N(0, 0.02) weights, zero biases, unit LayerNorm gains."""
        g = torch.Generator().manual_seed(check_seed("seed", seed)) if seed is not None else None
        for name, p in self.named_parameters():
            leaf = name.split(".")[-1]
            if leaf.startswith("W_"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif leaf == "w":
                p.fill_(1.0)
            else:
                p.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tensor("tokens", tokens, ndim=2, dims="(batch, pos)", floating=False)
        if tokens.shape[1] > self.n_ctx:
            raise ValueError(f"tokens: expected at most n_ctx={self.n_ctx} positions, got {tokens.shape[1]}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"tokens: expected ids in [0, {self.vocab_size}), got range [{int(tokens.min())}, {int(tokens.max())}]"
            )
        resid = self.hook_embed(self.embed.W_E[tokens])
        if self.positional == "learned":
            resid = resid + self.hook_pos_embed(self.pos_embed.W_pos[: tokens.shape[1]].unsqueeze(0).expand_as(resid))
        for block in self.blocks:
            resid = block(resid)
        return self.unembed_resid(resid)

    @torch.no_grad()
    def generate(
        self, tokens: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
        generator: torch.Generator | None = None, stop_token: int | None = None,
    ) -> torch.Tensor:
        """Sample a continuation of ``tokens (batch, pos)``; returns ``(batch, pos + new)``.

        ``temperature=0`` is greedy decoding (a finite number >= 0; NaN and inf raise ``ValueError``).
        Generation stops at ``n_ctx`` tokens, or once every row has produced ``stop_token`` (an id
        in ``[0, vocab_size)``). ``generator`` is a CPU ``torch.Generator`` for the sampling.
        """
        check_tensor("tokens", tokens, ndim=2, dims="(batch, pos)", floating=False)
        check_positive_int("max_new_tokens", max_new_tokens)
        temperature = check_positive_float("temperature", temperature, allow_zero=True)
        if stop_token is not None:
            check_positive_int("stop_token", stop_token, minimum=0)
            if stop_token >= self.vocab_size:
                raise ValueError(f"stop_token: expected an id in [0, {self.vocab_size}), got {stop_token}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        out = tokens
        done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        for _ in range(max_new_tokens):
            if out.shape[1] >= self.n_ctx:
                break
            logits = self(out)[:, -1]
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(out.device)
            if stop_token is not None:
                nxt = torch.where(done, torch.full_like(nxt, stop_token), nxt)
                done = done | (nxt == stop_token)
            out = torch.cat([out, nxt[:, None]], dim=1)
            if stop_token is not None and bool(done.all()):
                break
        return out
