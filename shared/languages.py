"""Which of gradtrace's languages (shared/diagnosis_texts.LANGUAGES) a reader asked for: from an HTTP
Accept-Language header (the API) or a POSIX locale such as zh_CN.UTF-8 (the CLI)."""

import re

from shared.diagnosis_texts import DEFAULT, LANGUAGES

# One entry of Accept-Language (RFC 9110 12.5.4): a language range and an optional weight.
_ENTRY = re.compile(r"^\s*([A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]{1,5})\s*)?$")


def language_of(tag: str) -> str | None:
    """The language of a tag (zh, zh-CN, zh-Hans-CN, zh_TW.UTF-8, en-GB), or None for one we do not speak.
    Every Chinese tag reads Simplified Chinese: it is the one we have."""
    primary = re.split(r"[-_.@]", tag.strip(), maxsplit=1)[0].lower()
    return primary if primary in LANGUAGES else None


def from_accept_language(header: str) -> str:
    """The best of our languages for an Accept-Language header: the highest weight among those we
    speak (`*` is English); English when none is named, or for a header that cannot be read."""
    ranked = []
    for position, entry in enumerate(header.split(",")[:50]):
        match = _ENTRY.match(entry)
        if not match:
            continue
        try:
            weight = float(match.group(2)) if match.group(2) is not None else 1.0
        except ValueError:
            continue
        lang = DEFAULT if match.group(1) == "*" else language_of(match.group(1))
        if lang is not None and 0 < weight <= 1:
            ranked.append((-weight, position, lang))
    return min(ranked)[2] if ranked else DEFAULT


def from_locale(environ: dict[str, str]) -> str | None:
    """The language of the POSIX locale (LC_ALL, then LC_MESSAGES, then LANG: the first that is set),
    or None where it names none of ours (C, POSIX, de_DE ...)."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(name)
        if value:
            return language_of(value)
    return None
