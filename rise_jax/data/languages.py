"""One registry of languages: ISO 639-1 code -> names in FLoRes-200, NTREX-128, MGSM and TyDiQA.

The resource group follows the usual split in multilingual MoE studies (high: languages with
large web corpora; low: the rest). Configs may override it per run (``data.low_resource``).
"""

from __future__ import annotations

import dataclasses

from rise_jax.config_values import comma_list


@dataclasses.dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1
    name: str
    flores: str | None  # FLoRes-200 directory, e.g. ben_Beng
    ntrex: str | None  # NTREX-128 file code, e.g. ben (English is the source file)
    tydiqa: str | None  # TyDiQA language name / id prefix, e.g. bengali
    mgsm: bool  # an mgsm_<code>.tsv exists in MGSM
    resource: str  # "high" or "low"


_TABLE = [
    # code, name, flores, ntrex, tydiqa, mgsm, resource
    ("ar", "Arabic", "arb_Arab", "arb", "arabic", False, "high"),
    ("bn", "Bengali", "ben_Beng", "ben", "bengali", True, "low"),
    ("de", "German", "deu_Latn", "deu", None, True, "high"),
    ("el", "Greek", "ell_Grek", "ell", None, False, "high"),
    ("en", "English", "eng_Latn", "eng", "english", True, "high"),
    ("es", "Spanish", "spa_Latn", "spa", None, True, "high"),
    ("fi", "Finnish", "fin_Latn", "fin", "finnish", False, "high"),
    ("fr", "French", "fra_Latn", "fra", None, True, "high"),
    ("hi", "Hindi", "hin_Deva", "hin", None, False, "high"),
    ("id", "Indonesian", "ind_Latn", "ind", "indonesian", False, "high"),
    ("ja", "Japanese", "jpn_Jpan", "jpn", None, True, "high"),
    ("ko", "Korean", "kor_Hang", "kor", "korean", False, "high"),
    ("ro", "Romanian", "ron_Latn", "ron", None, False, "high"),
    ("ru", "Russian", "rus_Cyrl", "rus", "russian", True, "high"),
    ("sw", "Swahili", "swh_Latn", "swa", "swahili", True, "low"),
    ("te", "Telugu", "tel_Telu", "tel", "telugu", True, "low"),
    ("th", "Thai", "tha_Thai", "tha", None, True, "low"),
    ("tr", "Turkish", "tur_Latn", "tur", None, False, "high"),
    ("vi", "Vietnamese", "vie_Latn", "vie", None, False, "high"),
    ("yo", "Yoruba", "yor_Latn", "yor", None, False, "low"),
    ("zh", "Chinese", "zho_Hans", "zho-CN", None, True, "high"),
]

LANGUAGES: dict[str, Language] = {row[0]: Language(*row) for row in _TABLE}


def get_language(code: str) -> Language:
    """The registry entry for ISO code ``code``; any registry name (``ben_Beng``, ``ben``,
    ``bengali``) is accepted too. Unknown codes are a clear error."""
    if code in LANGUAGES:
        return LANGUAGES[code]
    for lang in LANGUAGES.values():
        if code in (lang.flores, lang.ntrex, lang.tydiqa) or code.lower() == lang.name.lower():
            return lang
    raise KeyError(f"unknown language {code!r}; known ISO codes: {', '.join(sorted(LANGUAGES))}")


def parse_languages(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"en,bn,sw"`` or a list -> normalised ISO codes, order kept, duplicates rejected."""
    codes = [get_language(s).code for s in comma_list(spec)]
    dupes = sorted({c for c in codes if codes.count(c) > 1})
    if dupes:
        raise ValueError(f"language(s) listed twice: {', '.join(dupes)}")
    return codes
