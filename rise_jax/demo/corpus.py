"""The demo's multilingual parallel corpus, written for this project.

Every sentence is *subject + verb phrase + place/time* built from the small phrase tables below,
translated phrase by phrase into six languages in four scripts (Latin, Cyrillic, Han, Bengali),
with each language's own word order (Chinese and Bengali put the place before the verb phrase;
Bengali is verb-final inside the phrase). The 8 x 8 x 8 = 512 combinations are the same sentence
in every language (line ``i`` of every file is a translation of line ``i``), so the corpus is
parallel like FLoRes.

Splits are fixed by seed: ``test`` (64 sentences) and ``dev`` (64) for every language; ``train``
holds the rest, of which the *pretraining* mix uses a skewed share per language
(:data:`PRETRAIN_SHARE`): English, Spanish, Russian and Chinese are high-resource, Bengali and
Swahili low-resource — the situation RISE is designed for.

Files (``write_corpus``): ``<dir>/{train,dev,test}/<lang>.txt`` one sentence a line, and
``<dir>/pretrain.txt`` (the shuffled pretraining mix, one sentence a line), and
``<dir>/global_piqa/<lang>.jsonl`` (:func:`cloze_rows`, the test split as Global-PIQA rows), and
``<dir>/task/en.txt``: the demo's *task* corpus for the companion study's task-expert analysis
(:func:`task_lines`: English sums written in words, "three plus four makes seven.", all 81 with
both terms in one..nine). The sums are not in the pretraining mix: they stand for a task domain
(the study uses MGSM's math questions) whose text differs from the general sentences; what the
toy model's routing does with them is reported as measured.
"""

from __future__ import annotations

import json
import os
import random

from rise_jax.io_utils import write_json_atomic, write_text_atomic

LANGUAGES = ("en", "es", "ru", "zh", "bn", "sw")

SUBJECTS = {
    "en": ["The teacher", "The child", "My friend", "The old man", "The doctor", "The farmer", "The girl", "The cat"],
    "es": ["El maestro", "El niño", "Mi amigo", "El anciano", "La doctora", "El campesino", "La niña", "El gato"],
    "ru": ["Учитель", "Ребёнок", "Мой друг", "Старик", "Врач", "Фермер", "Девочка", "Кошка"],
    "zh": ["老师", "孩子", "我的朋友", "老人", "医生", "农民", "女孩", "猫"],
    "bn": ["শিক্ষক", "শিশুটি", "আমার বন্ধু", "বৃদ্ধ লোকটি", "ডাক্তার", "কৃষক", "মেয়েটি", "বিড়ালটি"],
    "sw": ["Mwalimu", "Mtoto", "Rafiki yangu", "Mzee", "Daktari", "Mkulima", "Msichana", "Paka"],
}

VERB_PHRASES = {
    "en": [
        "reads a book",
        "drinks water",
        "eats rice",
        "sees a bird",
        "writes a letter",
        "buys bread",
        "sings a song",
        "opens the door",
    ],
    "es": [
        "lee un libro",
        "bebe agua",
        "come arroz",
        "ve un pájaro",
        "escribe una carta",
        "compra pan",
        "canta una canción",
        "abre la puerta",
    ],
    "ru": [
        "читает книгу",
        "пьёт воду",
        "ест рис",
        "видит птицу",
        "пишет письмо",
        "покупает хлеб",
        "поёт песню",
        "открывает дверь",
    ],
    "zh": ["读书", "喝水", "吃米饭", "看见一只鸟", "写信", "买面包", "唱歌", "开门"],
    "bn": ["বই পড়ে", "পানি পান করে", "ভাত খায়", "একটি পাখি দেখে", "চিঠি লেখে", "রুটি কেনে", "গান গায়", "দরজা খোলে"],
    "sw": [
        "anasoma kitabu",
        "anakunywa maji",
        "anakula wali",
        "anaona ndege",
        "anaandika barua",
        "ananunua mkate",
        "anaimba wimbo",
        "anafungua mlango",
    ],
}

PLACES = {
    "en": [
        "in the garden",
        "at home",
        "in the market",
        "at school",
        "in the morning",
        "in the evening",
        "near the river",
        "in the city",
    ],
    "es": [
        "en el jardín",
        "en casa",
        "en el mercado",
        "en la escuela",
        "por la mañana",
        "por la tarde",
        "cerca del río",
        "en la ciudad",
    ],
    "ru": ["в саду", "дома", "на рынке", "в школе", "утром", "вечером", "у реки", "в городе"],
    "zh": ["在花园里", "在家里", "在市场上", "在学校", "早上", "晚上", "在河边", "在城市里"],
    "bn": ["বাগানে", "বাড়িতে", "বাজারে", "স্কুলে", "সকালে", "সন্ধ্যায়", "নদীর কাছে", "শহরে"],
    "sw": ["bustanini", "nyumbani", "sokoni", "shuleni", "asubuhi", "jioni", "karibu na mto", "mjini"],
}

# Share of each language's train split in the pretraining mix (skewed: high vs low resource).
PRETRAIN_SHARE = {"en": 1.0, "es": 1.0, "ru": 1.0, "zh": 1.0, "bn": 0.08, "sw": 0.08}
NUM_TEST = 64
NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen"
).split()
NUM_DEV = 64


def sentence(lang: str, s: int, v: int, p: int) -> str:
    """Combination ``(subject s, verb phrase v, place p)`` in ``lang``'s word order."""
    subj, vp, place = SUBJECTS[lang][s], VERB_PHRASES[lang][v], PLACES[lang][p]
    if lang == "zh":
        return f"{subj}{place}{vp}。"
    if lang == "bn":
        return f"{subj} {place} {vp}।"
    return f"{subj} {vp} {place}."


def splits(seed: int = 0) -> dict[str, list[tuple[int, int, int]]]:
    """The 512 combinations split into ``test`` / ``dev`` / ``train`` (fixed by ``seed``)."""
    combos = [(s, v, p) for s in range(8) for v in range(8) for p in range(8)]
    random.Random(seed).shuffle(combos)
    return {
        "test": combos[:NUM_TEST],
        "dev": combos[NUM_TEST : NUM_TEST + NUM_DEV],
        "train": combos[NUM_TEST + NUM_DEV :],
    }


def pretrain_count(lang: str, num_train: int) -> int:
    """How many of ``lang``'s first train sentences the pretraining mix uses."""
    return max(1, round(num_train * PRETRAIN_SHARE[lang]))


def pretrain_lines(seed: int = 0) -> list[str]:
    """The skewed pretraining mix: the first ``share`` of each language's train split, shuffled.

    Low-resource languages see only a few sentences here; the rest of their train split is what
    RISE fine-tunes on."""
    train = splits(seed)["train"]
    lines = []
    for lang in LANGUAGES:
        lines += [sentence(lang, *c) for c in train[: pretrain_count(lang, len(train))]]
    random.Random(seed + 1).shuffle(lines)
    return lines


def task_lines() -> list[str]:
    """The demo's task corpus: every sum ``a + b`` with ``a, b`` in 1..9, in English words."""
    w = NUMBER_WORDS
    return [f"{w[a].capitalize()} plus {w[b]} makes {w[a + b]}." for a in range(1, 10) for b in range(1, 10)]


def cloze_rows(lang: str, combos: list[tuple[int, int, int]]) -> list[dict[str, object]]:
    """The demo's Global-PIQA-style cloze items (the published rows: ``prompt``, ``solution0``,
    ``solution1``, ``label``): after a sentence's subject, its real continuation against the same
    words (characters, for Chinese) in reverse order — a model that learned the language's word
    order prefers the first."""
    rows = []
    for i, (s, v, p) in enumerate(combos):
        subject = SUBJECTS[lang][s]
        rest = sentence(lang, s, v, p)[len(subject) :].strip()
        scrambled = rest[::-1] if lang == "zh" else " ".join(rest.split(" ")[::-1])
        rows.append({"example_id": str(i), "prompt": subject, "solution0": rest, "solution1": scrambled, "label": 0})
    return rows


def write_corpus(directory: str, seed: int = 0) -> str:
    """Write every split and the pretraining mix under ``directory`` (atomically); returns it."""
    parts = splits(seed)
    counts: dict[str, dict[str, int]] = {}
    for split, combos in parts.items():
        for lang in LANGUAGES:
            lines = [sentence(lang, *c) for c in combos]
            if split == "train" and PRETRAIN_SHARE[lang] < 1.0:
                # Low-resource: their train split is the part pretraining did not see.
                lines = lines[pretrain_count(lang, len(combos)) :]
            write_text_atomic(os.path.join(directory, split, f"{lang}.txt"), "\n".join(lines) + "\n")
            counts.setdefault(split, {})[lang] = len(lines)
    for lang in LANGUAGES:
        rows = cloze_rows(lang, parts["test"])
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        write_text_atomic(os.path.join(directory, "global_piqa", f"{lang}.jsonl"), text)
    mix = pretrain_lines(seed)
    write_text_atomic(os.path.join(directory, "pretrain.txt"), "\n".join(mix) + "\n")
    write_text_atomic(os.path.join(directory, "task", "en.txt"), "\n".join(task_lines()) + "\n")
    counts["task"] = {"en": len(task_lines())}
    counts["pretrain"] = {lang: pretrain_count(lang, len(parts["train"])) for lang in LANGUAGES}
    write_json_atomic(os.path.join(directory, "counts.json"), counts)
    return directory
