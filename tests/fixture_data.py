"""Paths of the test fixtures the checkout holds (``tests/data/``; how they were made:
``tools/make_test_data.py``). No test reads outside the repository.

The real tokenizers are stored xz-compressed; :func:`tokenizer_dir` unpacks one once per content
into the system's temporary directory (atomically, so parallel test processes may race)."""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import tempfile

TEST_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
FLORES = os.path.join(TEST_DATA, "flores200")
MGSM = os.path.join(TEST_DATA, "mgsm")
NTREX = os.path.join(TEST_DATA, "ntrex128")
XQUAD = os.path.join(TEST_DATA, "xquad")
TYDIQA = os.path.join(TEST_DATA, "tydiqa", "tydiqa-goldp-v1.1-dev_ini.json")
# Qwen3's tokenizer retrained to 1024 ids (tools/make_test_data.py): for stage tests that do
# not test tokenisation, so a tiny model's embedding and LM head stay tiny.
TINY_TOKENIZER = os.path.join(TEST_DATA, "tokenizers", "tiny")
TINY_VOCAB = 1024


def tokenizer_dir(name: str) -> str:
    """A directory holding the real ``name`` tokenizer (``qwen3`` or ``phi35moe``) with its
    ``tokenizer.json`` unpacked; loadable by ``rise_jax.load_tokenizer`` and ``AutoTokenizer``."""
    src = os.path.join(TEST_DATA, "tokenizers", name)
    digest = hashlib.sha256()
    for file in sorted(os.listdir(src)):
        with open(os.path.join(src, file), "rb") as fh:
            digest.update(file.encode() + b"\0" + fh.read())
    dst = os.path.join(tempfile.gettempdir(), "rise_jax_test_tokenizers", f"{name}-{digest.hexdigest()[:16]}")
    if os.path.isdir(dst):
        return dst
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(dst), prefix=f".{name}-")
    for file in os.listdir(src):
        if file.endswith(".xz"):
            with lzma.open(os.path.join(src, file), "rb") as fh, open(os.path.join(tmp, file[:-3]), "wb") as out:
                shutil.copyfileobj(fh, out)
        else:
            shutil.copy(os.path.join(src, file), os.path.join(tmp, file))
    try:
        os.rename(tmp, dst)
    except OSError:  # another process unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


QWEN_TOKENIZER = tokenizer_dir("qwen3")
PHI_TOKENIZER = tokenizer_dir("phi35moe")
