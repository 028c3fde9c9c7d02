"""Models from outside mechnb, brought into it.

:func:`from_hf` turns a Hugging Face causal language model (GPT-2, GPT-NeoX / Pythia) into a
:class:`~mechnb.models.TinyTransformer` with the same weights and logits and mechnb's
TransformerLens-named hook points, so every method of mechnb runs on it.
:func:`word_level_tokenizer` builds a Hugging Face tokenizer over a fixed word list (e.g. the
vocabulary of :class:`~mechnb.tasks.SyntheticLanguage`) without downloading anything. :func:`load_cached` returns a pretrained model only if it is
already in the local Hugging Face cache (never downloads); :func:`ioi_texts` writes IOI prompts.

``transformers`` is an optional dependency (``pip install mechnb[hf]``); it is imported only
when one of these functions is called.
"""

from mechnb.interop.hf import SUPPORTED, from_hf, ioi_texts, load_cached, word_level_tokenizer

__all__ = ["from_hf", "word_level_tokenizer", "load_cached", "ioi_texts", "SUPPORTED"]
