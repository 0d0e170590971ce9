"""The corpora a model is pretrained on here, written where the later stages read them.

* ``demo``: the six-language corpus of :mod:`rise_jax.demo.corpus` (its skewed pretraining mix
  as one stream, split files, task set and cloze rows), tokenised by a byte-level BPE.
* ``cipher``: synthetic languages (:mod:`rise_jax.testbed.ciphers`) of one base corpus, the
  English sentences of the demo corpus written as words (:func:`~rise_jax.testbed.ciphers.base_words`),
  each pretrained on with its own mix weight (:mod:`rise_jax.testbed.mix`); tokenised word by word.
  Files: ``<dir>/{train,dev,test}/<code>.txt`` (the demo corpus's splits, line ``i`` of every
  language the same sentence), ``<dir>/languages.json`` (the ground truth: per language its
  ``shared`` vocabulary share, mix ``share``, and ``vocabulary_overlap`` {code: {code: Jaccard}}).
"""

from __future__ import annotations

import dataclasses
import os

from rise_jax.demo import corpus as demo_corpus
from rise_jax.io_utils import write_json_atomic, write_text_atomic
from rise_jax.testbed.ciphers import CipherLanguage, base_words, make_cipher, vocabulary, vocabulary_overlap
from rise_jax.testbed.mix import shares


@dataclasses.dataclass(frozen=True)
class PretrainCorpus:
    """What pretraining draws from: ``streams`` {name: sentences} with mix ``weights`` (one per
    stream, in order), and the word-level ``vocab`` of a cipher corpus (None: train a BPE)."""

    streams: dict[str, list[str]]
    weights: list[float]
    vocab: list[str] | None = None
    languages: dict[str, dict[str, float]] | None = None  # cipher: code -> {shared, share}


def base_splits(seed: int) -> dict[str, list[str]]:
    """The base corpus: the demo corpus's English sentences of each split, as words."""
    return {
        split: [base_words(demo_corpus.sentence("en", *c)) for c in combos]
        for split, combos in demo_corpus.splits(seed).items()
    }


def cipher_languages(codes: list[str], shared: list[float], seed: int) -> list[CipherLanguage]:
    """The cipher languages ``codes`` keeping ``shared`` shares of the base vocabulary."""
    vocab = sorted({w for lines in base_splits(seed).values() for line in lines for w in line.split()})
    return [make_cipher(code, s, vocab, seed) for code, s in zip(codes, shared, strict=True)]


def write_cipher_corpus(
    directory: str, codes: list[str], shared: list[float], mix: list[float], seed: int
) -> PretrainCorpus:
    """Write the cipher languages' splits and ground truth under ``directory`` (atomically)."""
    languages = cipher_languages(codes, shared, seed)
    base = base_splits(seed)
    for split, lines in base.items():
        for lang in languages:
            text = "\n".join(lang.encode(line) for line in lines) + "\n"
            write_text_atomic(os.path.join(directory, split, f"{lang.code}.txt"), text)
    p = shares(mix)
    truth = {
        lang.code: {
            "shared": lang.shared,
            "share": float(p[i]),
            "vocabulary_overlap": {o.code: round(vocabulary_overlap(lang, o), 4) for o in languages},
        }
        for i, lang in enumerate(languages)
    }
    write_json_atomic(os.path.join(directory, "languages.json"), truth)
    streams = {lang.code: [lang.encode(line) for line in base["train"]] for lang in languages}
    info = {c: {"shared": t["shared"], "share": t["share"]} for c, t in truth.items()}
    return PretrainCorpus(streams, list(mix), vocabulary(languages), info)


def write_demo_corpus(directory: str, seed: int) -> PretrainCorpus:
    """The demo's six-language corpus under ``directory``; its pretraining mix is one stream."""
    demo_corpus.write_corpus(directory, seed)
    return PretrainCorpus({"mix": demo_corpus.pretrain_lines(seed)}, [1.0])
