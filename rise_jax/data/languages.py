"""Language identity: any ISO 639-1/639-3 code, BCP-47 tag, FLoRes-200 code or English name -> one language.

Identity comes from ``langcodes`` (with ``language-data``): ``amh``, ``am``, ``amh_Ethi`` and
``Amharic`` are one language. Its canonical ``code`` — the key of every artefact — is the BCP-47
tag with individual languages folded into their macrolanguage (``swh`` -> ``sw``, ``arb`` ->
``ar``, as the ISO 639-1 codes the datasets and the papers use), plus the script only when it is
not the language's usual one (``zho_Hans`` -> ``zh``, ``zho_Hant`` -> ``zh-Hant``, ``srp_Latn`` ->
``sr-Latn``); a territory names the script written there (``zh-TW`` and ``zh-HK`` are ``zh-Hant``,
``zh-CN`` is ``zh``).

The small table below holds only what is dataset-specific and cannot be derived: the FLoRes-200
and NTREX-128 codes of the languages whose dataset code is not ``<ISO 639-3>_<script>`` /
``<ISO 639-3>`` (e.g. Swahili is ``swh_Latn`` and ``swa``), TyDiQA id prefixes, MGSM availability,
and the resource group used in multilingual MoE studies (high: languages with large web
corpora; low: the rest; every language outside the table counts as low). Datasets otherwise find
a language themselves (:mod:`rise_jax.data.sources`).
"""

from __future__ import annotations

import dataclasses
import functools

import langcodes
from langcodes.data_dicts import LIKELY_SUBTAGS

from rise_jax.config_values import comma_list
from rise_jax.errors import RiseError


class LanguageError(RiseError, KeyError):
    """A language name or code that no library knows (a KeyError: a failed lookup)."""

    def __str__(self) -> str:  # the message, not KeyError's quoted repr
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class Language:
    code: str  # canonical key (ISO 639-1 where there is one; see the module docstring)
    name: str  # English name
    flores: str | None  # FLoRes-200 directory, e.g. ben_Beng (for other languages: <iso3>_<script>)
    ntrex: str | None  # NTREX-128 file code, e.g. ben (English is the source file)
    tydiqa: str | None  # TyDiQA language name / id prefix, e.g. bengali
    mgsm: bool  # an mgsm_<code>.tsv exists in MGSM
    resource: str  # "high" or "low"
    iso3: str = ""  # ISO 639-3 (alpha-3) code, e.g. ben
    script: str = ""  # ISO 15924 script, e.g. Beng (the usual one when not given)


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

LANGUAGES: dict[str, Language] = {
    row[0]: Language(*row, iso3=langcodes.Language.get(row[0]).to_alpha3(), script=row[2].split("_")[1])
    for row in _TABLE
}


def _canonical(text: str) -> tuple[str, str, str, str] | None:
    """(canonical code, English name, ISO 639-3, script) of a code, tag, FLoRes code or name."""
    tag = text.strip().replace("_", "-")
    try:
        lang = langcodes.Language.get(langcodes.standardize_tag(tag, macro=True))
        if not lang.language or not lang.is_valid():  # every subtag in the IANA / ISO 639-3 registry
            raise LookupError(text)
    except (LookupError, ValueError):
        try:
            lang = langcodes.find(text.strip())
        except LookupError:
            return None
    base = langcodes.Language.get(lang.language)
    # The language's usual script (zh: Hans, sr: Cyrl) from CLDR's likely subtags; None when CLDR
    # has none (maximize() would then guess Latn for any language).
    known = lang.language in LIKELY_SUBTAGS
    usual = base.maximize().script if known else None
    # A territory without a script implies the script written there (zh-TW, zh-HK -> Hant;
    # sr-ME -> Latn; uz-AF -> Arab): CLDR's likely subtags for the language and territory.
    implied = lang.maximize().script if known and lang.territory and not lang.script else None
    script = lang.script or implied or usual or ""
    code = lang.language + (f"-{script}" if script and usual and script != usual else "")
    name = base.display_name() if base.has_name_data() else lang.language
    if code != lang.language:
        name += f" ({langcodes.Language.get(code).script_name()})"
    return code, name, base.to_alpha3(), script


@functools.lru_cache(maxsize=4096)
def get_language(code: str) -> Language:
    """The language ``code`` names: a table entry (by ISO code or any of its dataset names) or any
    language ``langcodes`` knows. Unknown names are a :class:`LanguageError`."""
    if code in LANGUAGES:
        return LANGUAGES[code]
    for lang in LANGUAGES.values():
        if code in (lang.flores, lang.ntrex, lang.tydiqa) or code.lower() == lang.name.lower():
            return lang
    found = _canonical(code)
    if found is None:
        raise LanguageError(
            f"unknown language {code!r}: not an ISO 639 code, BCP-47 tag, FLoRes-200 code or English language name"
        )
    canonical, name, iso3, script = found
    if canonical in LANGUAGES:
        return LANGUAGES[canonical]
    if "-" in canonical and canonical.split("-")[0] in LANGUAGES:  # a table language in another script
        known = LANGUAGES[canonical.split("-")[0]]
        return dataclasses.replace(
            known,
            code=canonical,
            name=name,
            flores=f"{iso3}_{script}",
            ntrex=None,
            tydiqa=None,
            mgsm=False,
            script=script,
        )
    return Language(canonical, name, f"{iso3}_{script}" if script else None, iso3, None, False, "low", iso3, script)


def mgsm_languages() -> tuple[str, ...]:
    """The codes of the languages MGSM publishes (the table's ``mgsm`` column)."""
    return tuple(row[0] for row in _TABLE if row[5])


def resource_groups(codes: list[str], low_resource: str | list[str] | tuple[str, ...] = "") -> dict[str, str]:
    """``{code: "high" | "low"}``: the languages named in ``low_resource`` (``config.analyze.low_resource``,
    any codes or names) are low and the others high; when it is empty, each language's group in
    the table above (the split of the multilingual MoE routing studies; every language outside
    the table is low)."""
    if comma_list(low_resource):
        low = {get_language(x).code for x in comma_list(low_resource)}
        return {c: "low" if c in low else "high" for c in codes}
    return {c: get_language(c).resource for c in codes}


def language_field(value: str, where: str) -> str:
    """The canonical code of the config field ``where`` (``config.select.target``) holding
    ``value``; an empty or unknown value is a :class:`LanguageError` naming the field."""
    if not str(value or "").strip():
        raise LanguageError(f"{where} is empty: name a language (ISO code, FLoRes code or English name)")
    try:
        return get_language(str(value).strip()).code
    except LanguageError as err:
        raise LanguageError(f"{where} = {value!r}: {err}") from None


def parse_languages(spec: str | list[str] | tuple[str, ...], where: str = "", allow_empty: bool = True) -> list[str]:
    """``"en,bn,sw"`` or a list -> normalised ISO codes, order kept, duplicates rejected. With
    ``where`` (the config field, ``config.data.languages``) errors name it; without
    ``allow_empty`` an empty list is one."""
    prefix = f"{where}: " if where else ""
    names = comma_list(spec)
    if not names and not allow_empty:
        raise LanguageError(f"{prefix}no language given: list the languages, e.g. en,bn,sw")
    codes = []
    for name in names:
        try:
            codes.append(get_language(name).code)
        except LanguageError as err:
            raise LanguageError(f"{prefix}{err}") from None
    dupes = sorted({c for c in codes if codes.count(c) > 1})
    if dupes:
        raise ValueError(f"{prefix}language(s) listed twice: {', '.join(dupes)}")
    return codes
