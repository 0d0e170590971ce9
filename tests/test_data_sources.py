"""Language registry, text sources (the real data under tests/data and local HF datasets), tokenisation, batching."""

import json
import os

import numpy as np
import pytest
from fixture_data import FLORES, MGSM, NTREX, QWEN_TOKENIZER, TYDIQA, XQUAD

import rise_jax
from rise_jax.data.batching import bucketed_batches, pack_rows, packed_batches, render, tokenize_examples
from rise_jax.data.languages import get_language, parse_languages
from rise_jax.data.sources import (
    Example,
    SourceError,
    SourceSpec,
    blank_lines_skipped,
    check_source,
    load_examples,
    locate,
)


def test_registry_maps_every_dataset_code_to_one_iso_code():
    bn = get_language("bn")
    assert (bn.flores, bn.ntrex, bn.tydiqa, bn.mgsm, bn.resource) == ("ben_Beng", "ben", "bengali", True, "low")
    assert get_language("ben_Beng") is bn and get_language("bengali") is bn and get_language("ben") is bn
    assert get_language("zho-CN").code == "zh" and get_language("swh_Latn").code == "sw"
    assert parse_languages("en, bn,sw") == ["en", "bn", "sw"]
    with pytest.raises(KeyError, match="unknown language 'xx'"):
        get_language("xx")
    with pytest.raises(ValueError, match="listed twice: bn"):
        parse_languages("bn,ben_Beng")
    # every FLoRes directory of the test data resolves
    for d in os.listdir(FLORES):
        if os.path.isdir(os.path.join(FLORES, d)):
            assert get_language(d).flores == d


def test_flores_is_parallel_by_index_id():
    spec = SourceSpec("flores", FLORES, split="dev")
    en, bn = load_examples(spec, "en"), load_examples(spec, "bn")
    assert len(en) == len(bn) == 99 and [e.id for e in en] == [e.id for e in bn]


def test_ntrex_mgsm_squad_and_tydiqa_sources():
    # every row of the trimmed copies in tests/data is read (see tests/data/README.md for the counts)
    ntrex = load_examples(SourceSpec("ntrex", NTREX), "sw")
    assert len(ntrex) == 60 and ntrex[0].id == "0"
    mgsm = load_examples(SourceSpec("mgsm", MGSM), "bn")
    assert len(mgsm) == 20 and mgsm[0].answer == "18" and mgsm[0].text == mgsm[0].prompt
    xquad = load_examples(SourceSpec("squad", os.path.join(XQUAD, "xquad.{lang}.json")), "th")
    assert len(xquad) == 97 and "\n" in xquad[0].text and xquad[0].answer
    tydi = SourceSpec("squad", TYDIQA, include_answer=True)
    bn = load_examples(tydi, "bn")
    assert len(bn) == 1 and bn[0].id.startswith("bengali-") and bn[0].text.endswith(bn[0].answer)


def test_hf_datasets_source_with_local_files(tmp_path):
    for lang, rows in {"en": ["a b", "c d"], "bn": ["আমি", "তুমি", "সে"]}.items():
        with open(tmp_path / f"{lang}.jsonl", "w", encoding="utf-8") as fh:
            for i, r in enumerate(rows):
                fh.write(json.dumps({"id": f"{lang}-{i}", "title": "t", "text": r}) + "\n")
    spec = SourceSpec(
        "hf", hf_path="json", hf_data_files=str(tmp_path / "{lang}.jsonl"), split="train", text_fields="title,text"
    )
    bn = load_examples(spec, "bn")
    assert [e.text for e in bn] == ["t\nআমি", "t\nতুমি", "t\nসে"] and bn[0].id == "bn-0"
    filt = SourceSpec(
        "hf", hf_path="json", hf_data_files=str(tmp_path / "bn.jsonl"), split="train", hf_filter="id:{lang}-1"
    )
    assert [e.text for e in load_examples(filt, "bn")] == ["তুমি"]
    bad = SourceSpec("hf", hf_path="json", hf_data_files=str(tmp_path / "en.jsonl"), split="train", text_fields="body")
    with pytest.raises(SourceError, match=r"column\(s\) \['body'\] not in dataset columns"):
        load_examples(bad, "en")


def test_plain_text_and_source_errors(tmp_path):
    (tmp_path / "sw.txt").write_text("moja\n\nmbili\n", encoding="utf-8")
    assert [e.text for e in load_examples(SourceSpec("plain_text", str(tmp_path)), "sw")] == ["moja", "mbili"]
    (tmp_path / "yo.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"no plain_text examples for language yo"):
        load_examples(SourceSpec("plain_text", str(tmp_path)), "yo")
    with pytest.raises(SourceError, match=r"te\.txt: missing"):
        load_examples(SourceSpec("plain_text", str(tmp_path)), "te")
    (tmp_path / "mgsm_sw.tsv").write_text("q only\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"mgsm_sw\.tsv: line 1 has 1 tab-separated fields"):
        load_examples(SourceSpec("mgsm", str(tmp_path)), "sw")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(SourceError, match=r"bad\.json: unreadable"):
        load_examples(SourceSpec("squad", str(tmp_path / "bad.json")), "bn")
    with pytest.raises(SourceError, match="unknown source kind 'csv'"):
        SourceSpec("csv")


def test_truncation_is_counted_and_chat_template_applied():
    tok = rise_jax.load_tokenizer(QWEN_TOKENIZER)
    exs = [Example("0", "one two three four five six seven"), Example("1", "one")]
    corpus = tokenize_examples("en", exs, tok, max_length=3)
    assert corpus.truncated == 1 and [len(s) for s in corpus.sequences] == [3, 1]
    capped = tokenize_examples("en", exs, tok, max_length=64, max_samples=1)
    assert len(capped.sequences) == 1 and capped.available == 2
    qa = Example("q", "ctx\nq", prompt="ctx\nq", answer="a")
    text = render(qa, tok, "chat")
    assert text.startswith("<|im_start|>user\nctx\nq<|im_end|>") and text.endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_bucketed_batches_cover_every_sequence_once_with_static_batch_size():
    seqs = [np.arange(1, n + 1, dtype=np.int32) for n in (5, 40, 3, 33, 17)]
    seen = []
    for ids, mask, index in bucketed_batches(seqs, batch_size=2, bucket_multiple=16):
        assert ids.shape[0] == 2 and ids.shape[1] % 16 == 0
        for row, i in enumerate(index):
            if i < 0:
                assert mask[row].sum() == 0
                continue
            seen.append(int(i))
            assert mask[row].sum() == len(seqs[i]) and (ids[row, : len(seqs[i])] == seqs[i]).all()
    assert sorted(seen) == list(range(5))


def test_packed_batches_hold_every_sequence_once_in_contiguous_numbered_segments():
    lengths = (5, 40, 3, 33, 17, 7, 1, 12, 30)
    seqs = [np.arange(1, n + 1, dtype=np.int32) + 100 * i for i, n in enumerate(lengths)]
    rows = pack_rows(lengths, 48)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 48 for r in rows) and len(rows) == 4  # 148 tokens: 4 rows
    seen = []
    for ids, seg, index in packed_batches(seqs, batch_size=3, bucket_multiple=16):
        assert ids.shape == seg.shape == (3, 48) and index.shape == (3, 4)  # R = 40 -> 48; G = 3 -> 4
        for row in range(3):
            at = 0
            for g, i in enumerate(index[row]):
                if i < 0:
                    continue
                n = lengths[i]
                assert (seg[row, at : at + n] == g + 1).all() and (ids[row, at : at + n] == seqs[i]).all()
                seen.append(int(i))
                at += n
            assert not seg[row, at:].any()  # then padding
    assert sorted(seen) == list(range(len(lengths)))
    with pytest.raises(ValueError, match="sequence 1 has 40 tokens: cannot pack into rows of 32"):
        pack_rows(lengths, 32)


# --- Any language: identity from langcodes, datasets that find the language themselves ---------


def _flores_tree(root, codes, source="eng_Latn"):
    """A FLoRes-200 tree whose ``codes`` directories hold the test data's English lines (content does
    not matter for resolving a language)."""
    import shutil

    for code in codes:
        os.makedirs(root / code, exist_ok=True)
        for split in ("dev", "train"):
            shutil.copy(os.path.join(FLORES, source, f"{split}.tsv"), root / code / f"{split}.tsv")
    return str(root)


def test_any_code_tag_flores_code_or_name_is_one_language():
    am = {get_language(x).code for x in ("amh", "am", "amh_Ethi", "Amharic", "am-ET")}
    assert am == {"am"} and get_language("amh").name == "Amharic" and get_language("am").flores == "amh_Ethi"
    assert get_language("zho_Hant").code == "zh-Hant" and get_language("zho_Hans").code == "zh"
    assert get_language("srp_Latn").code == "sr-Latn" and get_language("srp_Cyrl").code == "sr"
    assert get_language("hau_Latn").code == "ha" and get_language("Zulu").code == "zu"
    assert parse_languages("en,amh,Hausa") == ["en", "am", "ha"]
    with pytest.raises(ValueError, match="listed twice: am"):
        parse_languages("am,amh_Ethi")


def test_a_flores_tree_and_plain_text_find_languages_outside_the_old_table(tmp_path):
    tree = _flores_tree(tmp_path / "flores", ["amh_Ethi", "hau_Latn", "zul_Latn", "eng_Latn"])
    spec = SourceSpec("flores", tree, split="dev")
    for code in ("amh", "Hausa", "zul_Latn", "zu"):
        assert len(load_examples(spec, code)) == 99
    text = tmp_path / "text"
    text.mkdir()
    (text / "quz.txt").write_text("  Allillanchu  \n\n  Imaynalla\n", encoding="utf-8")
    assert [e.text for e in load_examples(SourceSpec("plain_text", str(text)), "quz")] == ["Allillanchu", "Imaynalla"]
    assert blank_lines_skipped(SourceSpec("plain_text", str(text)), "quz") == 1  # the final newline is no line
    assert blank_lines_skipped(SourceSpec("flores", tree, split="dev"), "amh") is None


def test_language_errors_name_the_dataset_the_language_and_what_it_has(tmp_path):
    with pytest.raises(KeyError, match=r"unknown language 'xyzzy'"):
        get_language("xyzzy")
    tree = _flores_tree(tmp_path / "flores", ["amh_Ethi", "eng_Latn"])
    with pytest.raises(SourceError, match=r"FLoRes-200 at .*flores has no ha \(Hausa\); it has: amh_Ethi, eng_Latn"):
        load_examples(SourceSpec("flores", tree, split="dev"), "hau")
    (tmp_path / "am.txt").write_bytes("ሰላም\n".encode() + b"\xff\xfe bad\n")
    with pytest.raises(SourceError, match=r"am\.txt: not UTF-8 text \(byte 10: "):
        load_examples(SourceSpec("plain_text", str(tmp_path)), "amh")


@pytest.mark.parametrize("chat", [False, True], ids=["completion-prompt", "chat-prompt"])
def test_opencompass_predictions_replay_prompt_and_prediction(tmp_path, chat):
    """The reference implementation's source: OpenCompass predictions, both prompt shapes."""

    def prompt(q):
        return [{"role": "SYSTEM", "prompt": "Answer."}, {"role": "HUMAN", "prompt": q}] if chat else q

    records = {str(i): {"origin_prompt": prompt(f"ప్రశ్న {i}"), "prediction": f"జవాబు {i}"} for i in range(11)}
    (tmp_path / "tydiqa-telugu.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    spec = SourceSpec("opencompass", str(tmp_path / "tydiqa-{tydiqa}.json"))
    got = load_examples(spec, "tel")
    head = "Answer.\n" if chat else ""
    assert [e.id for e in got[:3]] == ["0", "1", "10"]  # the reference's order (keys as strings)
    assert got[0].text == f"{head}ప్రశ్న 0\nజవాబు 0" and got[0].answer == "జవాబు 0"
    only = load_examples(SourceSpec("opencompass", spec.path, prompt_only=True), "te")
    assert only[0].text == f"{head}ప్రశ్న 0"
    (tmp_path / "tydiqa-bengali.json").write_text("[1, 2]")
    with pytest.raises(SourceError, match=r"tydiqa-bengali.json: not an OpenCompass predictions file"):
        load_examples(spec, "bn")


def test_tydiqa_and_xquad_errors_list_the_languages_the_files_have(tmp_path):
    tydiqa = TYDIQA
    with pytest.raises(SourceError, match=r"has no de \(German\) questions .*it has: arabic, bengali, english"):
        load_examples(SourceSpec("squad", tydiqa), "de")
    for lang in ("ar", "zh"):
        (tmp_path / f"xquad.{lang}.json").write_text(json.dumps({"data": []}))
    with pytest.raises(SourceError, match=r"xquad.sw.json: missing; .* have no sw \(Swahili\); they have: ar, zh"):
        load_examples(SourceSpec("squad", str(tmp_path / "xquad.{lang}.json")), "swa")
    with pytest.raises(SourceError, match=r"language de has no TyDiQA name"):
        load_examples(SourceSpec("squad", str(tmp_path / "tydiqa-{tydiqa}.json")), "de")


def test_a_territory_names_the_script_zh_tw_reads_traditional_chinese(tmp_path):
    """``zh-TW`` / ``zh-HK`` are Traditional Chinese (CLDR likely subtags, through langcodes), so a
    tree with both scripts gives them ``zho_Hant`` and ``zh`` / ``zh-CN`` ``zho_Hans``; a bare
    ``zho.txt`` is never taken for Traditional Chinese."""
    for tag in ("zh-TW", "zh_TW", "zh-HK", "zho_Hant", "zh-Hant"):
        assert get_language(tag).code == "zh-Hant" and get_language(tag).flores == "zho_Hant", tag
    for tag in ("zh", "zh-CN", "zh-SG", "zho_Hans", "zh-Hans-TW"):
        assert get_language(tag).code == "zh", tag
    assert get_language("sr-ME").code == "sr-Latn" and get_language("pt-BR").code == "pt"
    tree = tmp_path / "flores"
    for code, text in (("zho_Hans", "简体"), ("zho_Hant", "繁體")):
        (tree / code).mkdir(parents=True)
        (tree / code / "dev.tsv").write_text(f"index_id\tcategory\ttext\n1\tx\t{text}\n", encoding="utf-8")
    spec = SourceSpec("flores", str(tree), split="dev")
    assert [e.text for e in load_examples(spec, "zh-TW")] == ["繁體"]
    assert [e.text for e in load_examples(spec, "zh-CN")] == ["简体"]
    text = tmp_path / "text"
    text.mkdir()
    (text / "zho.txt").write_text("简体\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"has no zh-Hant \(Chinese \(Traditional\)\); it has: zho"):
        load_examples(SourceSpec("plain_text", str(text)), "zh-TW")
    (text / "zh-TW.txt").write_text("繁體\n", encoding="utf-8")
    assert [e.text for e in load_examples(SourceSpec("plain_text", str(text)), "zh-TW")] == ["繁體"]
    assert [e.text for e in load_examples(SourceSpec("plain_text", str(text)), "zh")] == ["简体"]


def test_fifos_in_a_data_directory_are_skipped_or_refused_never_opened(tmp_path, caplog):
    """A FIFO would block the reader forever: one beside the data is skipped with a warning, one
    that is the language's file is refused naming it; neither is ever opened."""
    (tmp_path / "en.txt").write_text("one\ntwo\n", encoding="utf-8")
    os.mkfifo(tmp_path / "notes.txt")
    os.mkfifo(tmp_path / "bn.txt")
    with caplog.at_level("WARNING"):
        assert [e.text for e in load_examples(SourceSpec("plain_text", str(tmp_path)), "en")] == ["one", "two"]
    with pytest.raises(SourceError, match=r"bn\.txt: a FIFO, not a regular file"):
        load_examples(SourceSpec("plain_text", str(tmp_path)), "bn")
    with pytest.raises(SourceError, match=r"bn\.txt: a FIFO"):
        locate(SourceSpec("plain_text", str(tmp_path)), "bn")
    os.mkfifo(tmp_path / "mgsm_sw.tsv")
    with pytest.raises(SourceError, match=r"mgsm_sw\.tsv: a FIFO"):
        load_examples(SourceSpec("mgsm", str(tmp_path)), "sw")
    os.mkfifo(tmp_path / "qa.json")
    with pytest.raises(SourceError, match=r"qa\.json: a FIFO"):
        load_examples(SourceSpec("squad", str(tmp_path / "qa.json")), "bn")


def test_check_source_finds_every_file_and_refuses_unaligned_parallel_text(tmp_path):
    """Validation's source check: by listing only; parallel text must have as many lines per language."""
    spec = SourceSpec("flores", FLORES)
    found = check_source(spec, ["en", "bn", "sw"], "config.data", parallel=True)
    assert found["bn"].endswith(os.path.join("ben_Beng", "dev.tsv"))
    for code, lines in (("en", "a\nb\nc\n"), ("bn", "a\nb\n"), ("sw", "a\n\nc")):  # blank lines count: ids are lines
        (tmp_path / f"{code}.txt").write_text(lines, encoding="utf-8")
    text = SourceSpec("plain_text", str(tmp_path))
    assert set(check_source(text, ["en", "bn", "sw"], "config.data")) == {"en", "bn", "sw"}
    with pytest.raises(
        SourceError, match=r"config.data.parallel: .*line counts differ: .*en.txt 3, .*bn.txt 2, .*sw.txt 3"
    ):
        check_source(text, ["en", "bn", "sw"], "config.data", parallel=True)
    assert check_source(text, ["en", "sw"], "config.data", parallel=True)  # 3 and 3
    with pytest.raises(SourceError, match=r"^/: no FLoRes-200 files in this directory"):
        check_source(SourceSpec("flores", "/"), ["en"], "config.data")
    with pytest.raises(SourceError, match=r"config.train.data.path is empty"):
        check_source(SourceSpec("flores", ""), ["en"], "config.train.data")
    assert check_source(SourceSpec("plain_text", str(tmp_path / "later")), ["en"], "config.data", pending=True) == {}
    assert check_source(SourceSpec("hf", hf_path="some/dataset"), ["en"], "config.data") == {}
