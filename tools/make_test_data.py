"""Rebuild the trimmed test fixtures of ``tests/data`` from a full copy of the data.

    python tools/make_test_data.py FULL_DATA_DIR

``FULL_DATA_DIR`` holds the datasets and tokenizers in the layout ``tests/data`` mirrors
(``flores200/``, ``mgsm/``, ``ntrex128/``, ``xquad/``, ``tydiqa/``, ``tokenizers/``). The suite
reads only what the checkout holds; this script is how that copy was made (and how to make it
again when a test needs more rows). It keeps each dataset's published format, its source notes
and licence, and only the rows and languages the tests use:

* ``flores200/<code>/{dev,train,test}.tsv``: every language of the shared copy; dev whole (99 rows,
  the tests count them), train and test the first ``FLORES_ROWS`` rows.
* ``mgsm/mgsm_<lang>.tsv``: the first ``MGSM_ROWS`` problems of each language; exemplars whole.
* ``ntrex128/``: the first ``NTREX_ROWS`` lines of the English source and of each reference.
* ``xquad/xquad.<lang>.json``: the first ``XQUAD_ARTICLES`` articles (SQuAD v1.1 JSON).
* ``tydiqa/``: whole (12 KiB).
* ``tokenizers/{qwen3,phi35moe}``: the real tokenizers, ``tokenizer.json`` xz-compressed
  (``tests/fixture_data.py`` unpacks them once into a temporary directory).
* ``tokenizers/tiny``: Qwen3's tokenizer pipeline (pre-tokenizer, special tokens, chat template)
  retrained to ``TINY_VOCAB`` ids on the FLoRes and MGSM text above, for the stage tests that do
  not test tokenisation: a tiny model's embedding and LM head stay tiny (Qwen3's 151,936 would
  dominate every one of them).
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "tests", "data")  # where the fixtures go
FLORES_ROWS = 40
MGSM_ROWS = 20
NTREX_ROWS = 60
XQUAD_ARTICLES = 2
XQUAD_LANGS = ("en", "th", "zh", "ar")
TINY_VOCAB = 1024  # ids of the small tokenizer, added tokens included
NOTES = ("SOURCE.txt", "LICENSE", "LICENSE.md", "CC-BY-SA4.0.txt", "LANGUAGES.tsv")


def _head(src: str, dst: str, lines: int | None) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(src, encoding="utf-8", newline="") as fh:
        rows = fh.readlines()
    with open(dst, "w", encoding="utf-8", newline="") as fh:
        fh.writelines(rows if lines is None else rows[:lines])


def _notes(src_dir: str, dst_dir: str) -> None:
    os.makedirs(dst_dir, exist_ok=True)
    for name in NOTES:
        if os.path.isfile(os.path.join(src_dir, name)):
            shutil.copy(os.path.join(src_dir, name), os.path.join(dst_dir, name))


def main(shared: str) -> None:
    flores = os.path.join(shared, "flores200")
    _notes(flores, os.path.join(HERE, "flores200"))
    for code in sorted(os.listdir(flores)):
        if os.path.isdir(os.path.join(flores, code)):
            for split, rows in (("dev", None), ("train", FLORES_ROWS), ("test", FLORES_ROWS)):
                keep = None if rows is None else rows + 1  # + the header
                _head(
                    os.path.join(flores, code, f"{split}.tsv"),
                    os.path.join(HERE, "flores200", code, f"{split}.tsv"),
                    keep,
                )

    mgsm = os.path.join(shared, "mgsm")
    _notes(mgsm, os.path.join(HERE, "mgsm"))
    shutil.copy(os.path.join(mgsm, "mgsm_exemplars.json"), os.path.join(HERE, "mgsm", "mgsm_exemplars.json"))
    for name in sorted(os.listdir(mgsm)):
        if name.startswith("mgsm_") and name.endswith(".tsv"):
            _head(os.path.join(mgsm, name), os.path.join(HERE, "mgsm", name), MGSM_ROWS)

    ntrex = os.path.join(shared, "ntrex128")
    _notes(ntrex, os.path.join(HERE, "ntrex128"))
    for name in sorted(os.listdir(ntrex)):
        if name.startswith("newstest2019-"):
            _head(os.path.join(ntrex, name), os.path.join(HERE, "ntrex128", name), NTREX_ROWS)

    xquad = os.path.join(shared, "xquad")
    _notes(xquad, os.path.join(HERE, "xquad"))
    for lang in XQUAD_LANGS:
        with open(os.path.join(xquad, f"xquad.{lang}.json"), encoding="utf-8") as fh:
            data = json.load(fh)
        data["data"] = data["data"][:XQUAD_ARTICLES]
        with open(os.path.join(HERE, "xquad", f"xquad.{lang}.json"), "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False)

    shutil.copytree(os.path.join(shared, "tydiqa"), os.path.join(HERE, "tydiqa"), dirs_exist_ok=True)

    for name in ("qwen3", "phi35moe"):
        src, dst = os.path.join(shared, "tokenizers", name), os.path.join(HERE, "tokenizers", name)
        os.makedirs(dst, exist_ok=True)
        for file in sorted(os.listdir(src)):
            if file == "tokenizer.json":
                with open(os.path.join(src, file), "rb") as fh, lzma.open(os.path.join(dst, file + ".xz"), "wb") as out:
                    out.write(fh.read())
            elif file.endswith((".json", ".txt")) and file not in ("vocab.json", "merges.txt"):
                shutil.copy(os.path.join(src, file), os.path.join(dst, file))
            elif file == "tokenizer.model":
                shutil.copy(os.path.join(src, file), os.path.join(dst, file))


def build_tiny_tokenizer() -> None:
    """``tokenizers/tiny`` from the unpacked Qwen3 tokenizer and the trimmed texts in this folder."""
    import csv

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from fixture_data import QWEN_TOKENIZER

    from rise_jax.tokenizer import load_tokenizer

    lines = []
    flores = os.path.join(HERE, "flores200")
    for code in sorted(os.listdir(flores)):
        for split in ("dev", "train", "test"):
            path = os.path.join(flores, code, f"{split}.tsv")
            if os.path.isfile(path):
                with open(path, encoding="utf-8", newline="") as fh:
                    lines += [r["text"] for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    for name in sorted(os.listdir(os.path.join(HERE, "mgsm"))):
        if name.endswith(".tsv"):
            with open(os.path.join(HERE, "mgsm", name), encoding="utf-8") as fh:
                lines += [line.split("\t")[0] for line in fh]
    qwen = load_tokenizer(QWEN_TOKENIZER)
    thinking = ["<think>", "</think>"]  # Qwen3's chat template writes them; ordinary added tokens there too
    tiny = qwen.train_new_from_iterator(lines, vocab_size=TINY_VOCAB - len(thinking))
    tiny.add_tokens(thinking)
    out = os.path.join(HERE, "tokenizers", "tiny")
    os.makedirs(out, exist_ok=True)
    tiny.backend_tokenizer.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(QWEN_TOKENIZER, "tokenizer_config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    keep = ("add_bos_token", "bos_token", "eos_token", "pad_token", "unk_token", "chat_template", "errors")
    config = {k: config[k] for k in keep if k in config}
    config["model_max_length"] = 4096
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump(config, fh, ensure_ascii=False, indent=1)
    with open(os.path.join(out, "SOURCE.txt"), "w", encoding="utf-8") as fh:
        fh.write(
            "Built by tools/make_test_data.py (build_tiny_tokenizer): the Qwen3 tokenizer's pipeline\n"
            f"retrained with transformers' train_new_from_iterator to {TINY_VOCAB} ids on tests/data's FLoRes and\n"
            "MGSM text; chat template and special tokens from Qwen3's tokenizer_config.json (Apache-2.0).\n"
        )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/make_test_data.py FULL_DATA_DIR")
    main(sys.argv[1])
    build_tiny_tokenizer()
