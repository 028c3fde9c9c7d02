"""mechnb.interop.from_hf checked against TransformerLens 4.x's ``TransformerBridge``.

The same random-init Hugging Face model (GPT-2; GPT-NeoX with parallel blocks) is written with
``save_pretrained`` to a temporary directory with a word-level tokenizer beside it, booted offline by
``TransformerBridge.boot_transformers(path)`` and converted by :func:`mechnb.interop.from_hf`. The
cached activations with the same TransformerLens names must agree to 1e-4: the residual stream
before and after each block, each attention pattern, attention output and MLP output.
TransformerLens is a test-only dependency (the ``tl`` extra, installed by ``make setup``).
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
pytest.importorskip("transformers", reason="the hf extra (pip install mechnb[hf]) is not installed")
# TransformerLens is imported by the test itself: it takes ~3 s to import, paid at collection by
# every pytest process of every `make test` configuration otherwise

from mechnb.interop import from_hf, word_level_tokenizer  # noqa: E402
from test_interop import LANG, gpt2, neox  # noqa: E402

NAMES = ["hook_resid_pre", "hook_resid_post", "attn.hook_pattern", "hook_attn_out", "hook_mlp_out"]


@pytest.mark.parametrize("family", ["gpt2", "neox"])
def test_cached_activations_equal_transformer_lens(family: str, tmp_path) -> None:
    hf = {"gpt2": gpt2, "neox": neox}[family](seed=5)
    hf.save_pretrained(tmp_path)
    word_level_tokenizer(LANG.tokenizer.vocab).save_pretrained(tmp_path)
    bridge_mod = pytest.importorskip("transformer_lens.model_bridge",
                                     reason="TransformerLens 4.x (the tl extra: pip install mechnb[tl]) is not installed")
    bridge = bridge_mod.TransformerBridge.boot_transformers(str(tmp_path), device="cpu", dtype=torch.float32)
    model = from_hf(hf)
    toks = LANG.sample_batch(4, seed=9)
    with torch.no_grad():
        tl_logits, tl_cache = bridge.run_with_cache(toks)
    logits, cache = model.run_with_cache(toks)
    torch.testing.assert_close(logits, tl_logits, atol=1e-4, rtol=0)
    names = [f"blocks.{layer}.{n}" for layer in range(model.n_layers) for n in NAMES]
    if family == "gpt2":
        names += [f"blocks.{layer}.hook_resid_mid" for layer in range(model.n_layers)]
    for name in names:
        torch.testing.assert_close(cache[name], tl_cache[name], atol=1e-4, rtol=0, msg=name)
    assert float(cache["blocks.1.attn.hook_pattern"].std()) > 0.01  # patterns are not uniform
