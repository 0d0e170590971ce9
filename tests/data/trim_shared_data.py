"""Rebuild the trimmed test fixtures in this folder from the full data in ``../shared/data``.

    python tests/data/trim_shared_data.py [SHARED_DATA_DIR]

The suite reads only what the checkout holds; this script is how that copy was made (and how to
make it again when a test needs more rows). It keeps each dataset's published format, its source
notes and licence, and only the rows and languages the tests use:

* ``flores200/<code>/{dev,train,test}.tsv``: every language of the shared copy; dev whole (99 rows,
  the tests count them), train and test the first ``FLORES_ROWS`` rows.
* ``mgsm/mgsm_<lang>.tsv``: the first ``MGSM_ROWS`` problems of each language; exemplars whole.
* ``ntrex128/``: the first ``NTREX_ROWS`` lines of the English source and of each reference.
* ``xquad/xquad.<lang>.json``: the first ``XQUAD_ARTICLES`` articles (SQuAD v1.1 JSON).
* ``tydiqa/``: whole (12 KiB).
* ``tokenizers/{qwen3,phi35moe}``: the real tokenizers, ``tokenizer.json`` xz-compressed
  (``tests/fixture_data.py`` unpacks them once into a temporary directory).
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FLORES_ROWS = 40
MGSM_ROWS = 20
NTREX_ROWS = 60
XQUAD_ARTICLES = 2
XQUAD_LANGS = ("en", "th", "zh", "ar")
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


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "data"))
