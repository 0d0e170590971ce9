"""Synthetic languages with known ground truth: word-level ciphers of one base corpus.

A base corpus is a list of sentences written as space-separated words (:func:`base_words`). A
*cipher language* maps every base word to a word of its own through a bijection, so its text has
exactly the base content (line ``i`` of every language is a translation of line ``i``: parallel
by construction) in another vocabulary:

* ``shared = 0``: a full cipher. Every word becomes a private word ``<code>_<n>``, with ``n`` a
  seeded permutation of the base word's index: disjoint vocabularies, the tokens in another order.
* ``0 < shared < 1``: a partial cipher. A seeded random ``round(shared · V)`` of the ``V`` base
  words keep their base spelling (a shared vocabulary: related languages, a shared script); the
  others get private words as above.
* ``shared = 1``: the base language itself (the identity).

Two languages share a word exactly when both keep its base spelling, so the vocabulary overlap of
any two is known (:meth:`CipherLanguage.shared_words`). The tokenizer is word-level
(:func:`vocabulary`): one id per word, so the bijection on words is a bijection on token ids.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

SPECIAL = ("<pad>", "<eos>")


def base_words(sentence: str) -> str:
    """A natural sentence as the base corpus writes it: lower case, punctuation split off
    (``"The cat sings."`` -> ``"the cat sings ."``)."""
    return " ".join(re.findall(r"\w+|[^\w\s]", sentence.lower()))


@dataclasses.dataclass(frozen=True)
class CipherLanguage:
    """One synthetic language: ``code`` (its language code), ``shared`` (the share of the base
    vocabulary it keeps), and the word map built by :func:`make_cipher`."""

    code: str
    shared: float
    forward: dict[str, str]  # base word -> this language's word

    @property
    def backward(self) -> dict[str, str]:
        return {w: b for b, w in self.forward.items()}

    def encode(self, text: str) -> str:
        """A base-corpus sentence in this language (every word mapped; an unknown word is an error)."""
        try:
            return " ".join(self.forward[w] for w in text.split())
        except KeyError as err:
            raise KeyError(f"language {self.code}: word {err.args[0]!r} is not in the base vocabulary") from None

    def decode(self, text: str) -> str:
        """The base-corpus sentence of a sentence in this language (the inverse of :meth:`encode`)."""
        back = self.backward
        return " ".join(back[w] for w in text.split())

    def shared_words(self) -> set[str]:
        """The base words this language spells as the base does."""
        return {b for b, w in self.forward.items() if b == w}


def make_cipher(code: str, shared: float, vocab: list[str], seed: int) -> CipherLanguage:
    """The cipher language ``code`` over the base vocabulary ``vocab`` (sorted, unique words)
    keeping a ``shared`` share of it; seeded by ``seed`` and the code, so each language has its own
    permutation and its own shared words."""
    if not 0.0 <= shared <= 1.0:
        raise ValueError(f"language {code}: shared = {shared!r}: give a share of the vocabulary in [0, 1]")
    if "_" in code or not code:
        raise ValueError(f"language code {code!r}: must be non-empty without '_' (private words are <code>_<n>)")
    rng = np.random.default_rng([seed, *code.encode()])
    n = len(vocab)
    keep = set(rng.choice(n, size=round(shared * n), replace=False).tolist())
    perm = rng.permutation(n)
    forward = {w: (w if i in keep else f"{code}_{perm[i]}") for i, w in enumerate(vocab)}
    return CipherLanguage(code, shared, forward)


def vocabulary(languages: list[CipherLanguage]) -> list[str]:
    """Every token of the word-level tokenizer: the special tokens, then each word any of the
    languages uses, sorted (so a private word's id follows its permuted index)."""
    words = {w for lang in languages for w in lang.forward.values()}
    return list(SPECIAL) + sorted(words, key=lambda w: (w.rsplit("_", 1)[0], _index(w)))


def _index(word: str) -> int:
    tail = word.rsplit("_", 1)[-1]
    return int(tail) if "_" in word and tail.isdigit() else -1


def vocabulary_overlap(a: CipherLanguage, b: CipherLanguage) -> float:
    """Jaccard overlap of two languages' vocabularies (the ground truth the study compares with)."""
    wa, wb = set(a.forward.values()), set(b.forward.values())
    return len(wa & wb) / len(wa | wb)
