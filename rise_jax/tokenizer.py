"""Tokenizer of a checkpoint directory, with its chat template.

``tokenizer.json`` is loaded with ``PreTrainedTokenizerFast`` (exact for both families; in
transformers 5.x ``AutoTokenizer`` rebuilds a Llama pipeline for Phi-3.5 that differs from
SentencePiece on text starting with spaces), taking special tokens, padding side and the chat
template from ``tokenizer_config.json``. Without ``tokenizer.json`` it falls back to
``AutoTokenizer`` (never with remote code).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from rise_jax.errors import RiseError
from rise_jax.io_utils import read_json_object

_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")


class TokenizerError(RiseError, ValueError):
    """No usable tokenizer in a directory; the message names it."""


def _token_str(v: Any) -> str | None:
    if isinstance(v, dict):
        return v.get("content")
    return v


def load_tokenizer(path: str):
    """A ``transformers`` fast tokenizer for the checkpoint (or tokenizer) directory ``path``."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok_json = os.path.join(path, "tokenizer.json")
    cfg_json = os.path.join(path, "tokenizer_config.json")
    if not os.path.isdir(path):
        raise TokenizerError(f"{path}: tokenizer directory does not exist")
    if os.path.isfile(tok_json):
        config: dict[str, Any] = {}
        if os.path.isfile(cfg_json):
            config = read_json_object(cfg_json, "tokenizer config", TokenizerError)
        kwargs = {k: _token_str(config[k]) for k in _SPECIAL if config.get(k) is not None}
        try:
            tok = PreTrainedTokenizerFast(
                tokenizer_file=tok_json,
                padding_side=config.get("padding_side", "right"),
                model_max_length=config.get("model_max_length", int(1e30)),
                clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces", False),
                **kwargs,
            )
        except Exception as err:  # the tokenizers library raises a bare Exception on a bad file
            raise TokenizerError(f"{tok_json}: unreadable tokenizer: {_one_line(err)}") from err
        template = config.get("chat_template")
        jinja = os.path.join(path, "chat_template.jinja")
        if template is None and os.path.isfile(jinja):
            try:
                with open(jinja, encoding="utf-8") as fh:
                    template = fh.read()
            except (OSError, UnicodeDecodeError) as err:
                raise TokenizerError(f"{jinja}: unreadable chat template: {err}") from err
        if template is not None:
            if not isinstance(template, (str, list)):
                raise TokenizerError(f"{cfg_json}: chat_template is a {type(template).__name__}, not text")
            tok.chat_template = template
        return tok
    if os.path.isfile(cfg_json) or os.path.isfile(os.path.join(path, "tokenizer.model")):
        if os.path.isfile(cfg_json):
            read_json_object(cfg_json, "tokenizer config", TokenizerError)
        try:
            return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise TokenizerError(f"{path}: unreadable tokenizer: {_one_line(err)}") from err
    raise TokenizerError(f"{path}: no tokenizer.json, tokenizer_config.json or tokenizer.model")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("…" if len(text) > 300 else "")


def largest_id(tokenizer) -> int:
    """The largest token id ``tokenizer`` can produce (its vocabulary and added tokens)."""
    ids = list(tokenizer.get_vocab().values())
    return max(ids) if ids else -1


def checkpoint_vocab_size(checkpoint_dir: str) -> int | None:
    """``vocab_size`` of the checkpoint's ``config.json`` (top level or its ``text_config``); None
    when the directory has no ``config.json`` or it names none."""
    file = os.path.join(checkpoint_dir, "config.json")
    if not os.path.isfile(file):
        return None
    cfg = read_json_object(file, "model config", TokenizerError)
    size = cfg.get("vocab_size", (cfg.get("text_config") or {}).get("vocab_size"))
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise TokenizerError(f"{file}: vocab_size = {size!r} is not a positive whole number")
    return size


@functools.lru_cache(maxsize=32)
def _cached_largest_id(path: str, stamp: tuple) -> int:
    del stamp  # part of the cache key only: the files' sizes and modification times
    return largest_id(load_tokenizer(path))


def _stamp(path: str) -> tuple:
    out = []
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json"):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            st = os.stat(file)
            out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def check_fits_model(tokenizer_dir: str, checkpoint_dir: str, where: str = "config.model.tokenizer") -> None:
    """Refuse a tokenizer that can produce ids the model has no embedding row for (its largest id
    >= the checkpoint's ``vocab_size``: the model would read past its embedding and return NaN or
    garbage). Loads the tokenizer (so an unreadable one fails here) and reads ``config.json`` only.
    A model vocabulary larger than the tokenizer's (padding rows) is fine."""
    size = checkpoint_vocab_size(checkpoint_dir)
    top = _cached_largest_id(tokenizer_dir, _stamp(tokenizer_dir))
    if size is not None and top >= size:
        raise TokenizerError(
            f"{where}: the tokenizer at {tokenizer_dir} produces ids up to {top} ({top + 1} tokens), but the model "
            f"has vocab_size = {size} ({os.path.join(checkpoint_dir, 'config.json')}): use the checkpoint's own "
            "tokenizer or one of at most that many ids"
        )


def check_config_tokenizer(model: Any) -> None:
    """``config.model``'s tokenizer (``model.tokenizer``, else the checkpoint's own) loads and
    fits the checkpoint's vocabulary (:func:`check_fits_model`); skipped for a checkpoint that is not
    a local directory (a hub id, fetched later)."""
    if not os.path.isdir(model.checkpoint or ""):
        return
    own = model.get("tokenizer") or ""
    if own and not os.path.isdir(own):
        raise TokenizerError(f"config.model.tokenizer = {own!r}: no such directory")
    check_fits_model(
        own or model.checkpoint, model.checkpoint, "config.model.tokenizer" if own else "config.model.checkpoint"
    )
