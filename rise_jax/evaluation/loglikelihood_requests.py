"""Token sequences for log-likelihood scoring, built as lm-evaluation-harness builds them, so
that our multiple-choice and perplexity numbers are the field's numbers on the same text.

* :func:`encode_pair` — a (context, continuation) request: trailing spaces of the context move
  to the continuation, the whole string is encoded once and the continuation is what follows the
  context's own encoding (``TemplateLM._encode_pair``; with BPE a joint encoding can differ from
  encoding the two parts apart); an empty context is the prefix token below.
* :func:`rolling_windows` — a document's rolling log-likelihood (``loglikelihood_rolling``): every
  token is predicted once, the first after a prefix token (BOS, else EOS: ``HFLM.prefix_token_id``),
  in windows of at most ``max_length`` input tokens, each later window conditioned on as many
  preceding tokens as fit (``utils.get_rolling_token_windows`` with ``context_len=1``).

Both return ``(tokens, target_mask)`` pairs: the sequence fed to the model plus the token it
predicts last, and which positions are scored — the form ``Evaluator.sequence_logprobs`` takes.
"""

from __future__ import annotations

import numpy as np


def encode(tokenizer, text: str) -> list[int]:
    """``tokenizer.encode`` with the tokenizer's default special tokens (lm-eval's ``tok_encode``
    for causal models: a BOS where the tokenizer adds one)."""
    return list(tokenizer(text)["input_ids"])


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) as lm-eval splits them. An empty context (XNLI's
    prompts) is the prefix token (BOS, else EOS) before the continuation encoded without special
    tokens — or the continuation's own first token when it already is that token
    (``TemplateLM.loglikelihood``)."""
    if not context:
        cont = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
        prefix = prefix_token(tokenizer)
        return ([prefix], cont) if not cont or cont[0] != prefix else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode(tokenizer, context + continuation)
    context_ids = encode(tokenizer, context)
    return context_ids, whole[len(context_ids) :]


def pair_sequence(tokenizer, context: str, continuation: str) -> tuple[np.ndarray, np.ndarray]:
    """``(context + continuation tokens, mask of the continuation)`` of one request."""
    ctx, cont = encode_pair(tokenizer, context, continuation)
    return np.asarray(ctx + cont, np.int32), np.asarray([False] * len(ctx) + [True] * len(cont))


def prefix_token(tokenizer) -> int:
    """The token a document's first token is predicted after: BOS, else EOS."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to predict a document's first token after")
    return int(token)


def rolling_windows(tokens: list[int], prefix: int, max_length: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(sequence, target_mask)`` windows predicting every token of ``tokens`` exactly once.

    Window 1 predicts ``tokens[:L]`` from ``[prefix] + tokens[:L-1]``; each later window predicts
    the next ``≤ L`` tokens from the ``L`` tokens before its last prediction (so a short last
    window still gets a full context). ``L = max_length``.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    full = [prefix, *tokens]  # full[i + 1] = tokens[i]
    windows = []
    first = min(max_length, len(tokens))
    if first:
        windows.append((np.asarray(full[: first + 1], np.int32), np.asarray([False] + [True] * first)))
    done = first
    while done < len(tokens):
        n_pred = min(len(tokens) - done, max_length)
        end = done + n_pred  # predicts tokens[done:end] = full[done + 1 : end + 1]
        seq = full[end - max_length : end + 1]
        windows.append((np.asarray(seq, np.int32), np.asarray([False] * (len(seq) - n_pred) + [True] * n_pred)))
        done = end
    return windows
