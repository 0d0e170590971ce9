"""Tokenizer of a checkpoint directory, with its chat template.

``tokenizer.json`` is loaded with ``PreTrainedTokenizerFast`` (exact for both families; in
transformers 5.x ``AutoTokenizer`` rebuilds a Llama pipeline for Phi-3.5 that differs from
SentencePiece on text starting with spaces), taking special tokens, padding side and the chat
template from ``tokenizer_config.json``. Without ``tokenizer.json`` it falls back to
``AutoTokenizer`` (never with remote code).
"""

from __future__ import annotations

import json
import os
from typing import Any

from rise_jax.errors import RiseError

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
    if os.path.isfile(tok_json):
        config: dict[str, Any] = {}
        if os.path.isfile(cfg_json):
            try:
                with open(cfg_json, encoding="utf-8") as fh:
                    config = json.load(fh)
            except (OSError, json.JSONDecodeError) as err:
                raise TokenizerError(f"{cfg_json}: unreadable: {err}") from err
        kwargs = {k: _token_str(config[k]) for k in _SPECIAL if config.get(k) is not None}
        tok = PreTrainedTokenizerFast(
            tokenizer_file=tok_json,
            padding_side=config.get("padding_side", "right"),
            model_max_length=config.get("model_max_length", int(1e30)),
            clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces", False),
            **kwargs,
        )
        template = config.get("chat_template")
        jinja = os.path.join(path, "chat_template.jinja")
        if template is None and os.path.isfile(jinja):
            with open(jinja, encoding="utf-8") as fh:
                template = fh.read()
        if template is not None:
            tok.chat_template = template
        return tok
    if os.path.isfile(cfg_json) or os.path.isfile(os.path.join(path, "tokenizer.model")):
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    raise TokenizerError(f"{path}: no tokenizer.json, tokenizer_config.json or tokenizer.model")
