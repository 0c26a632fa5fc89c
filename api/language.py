"""The language of an answer's words (the diagnosis): `?lang=en|zh`, else the Accept-Language header, else English.

Records keep the diagnosis as the worker wrote it: the verdict, the evidence (numbers) and
English words. An answer in English shows those words as stored; one in Chinese words the
stored verdict again from the run's spec and evidence (shared/diagnosis.explain), so old and
cached records read right in both languages with the same figures. Either way the verdict
gains its `title` and `explanation`. Error messages stay English.
"""

from typing import Any

from flask import Flask, Response, g, request
from pydantic import ValidationError

from api.validation import query_choice
from shared.diagnosis import VERDICTS, explain
from shared.diagnosis_texts import DEFAULT, LANGUAGES, verdict_text
from shared.languages import from_accept_language
from shared.spec import ExperimentSpec

# What Content-Language says of each language's answers.
CONTENT_LANGUAGE = {"en": "en", "zh": "zh-Hans"}


def request_language() -> str:
    """The request's language: `?lang=` (en or zh; anything else is a 422), else Accept-Language."""
    lang = query_choice("lang", LANGUAGES) or from_accept_language(request.headers.get("Accept-Language", ""))
    g.language = lang
    return lang


def localize_summary(summary: dict[str, Any] | None, spec: dict[str, Any], lang: str) -> dict[str, Any] | None:
    """The summary with its diagnosis in `lang`: title and explanation added, reasons and advice worded."""
    diagnosis = (summary or {}).get("diagnosis")
    if not isinstance(diagnosis, dict) or diagnosis.get("verdict") not in VERDICTS:
        return summary
    return {**summary, "diagnosis": localize_diagnosis(diagnosis, spec, lang)}


def localize_diagnosis(diagnosis: dict[str, Any], spec: dict[str, Any], lang: str) -> dict[str, Any]:
    """A stored diagnosis in `lang`; where the words cannot be rebuilt (a record of older rules), the stored ones."""
    verdict = diagnosis["verdict"]
    title, explanation = verdict_text(verdict, lang)
    found = {"verdict": verdict, "title": title, "explanation": explanation,
             **{key: value for key, value in diagnosis.items() if key != "verdict"}}
    words = _reworded(diagnosis, spec, lang) if lang != DEFAULT else None
    if words is not None:
        found["reasons"], found["advice"] = words["reasons"], words["advice"]
    return found


def _reworded(diagnosis: dict[str, Any], spec: dict[str, Any], lang: str) -> dict[str, Any] | None:
    try:
        return explain(diagnosis["verdict"], ExperimentSpec.model_validate(spec), diagnosis.get("evidence") or {}, lang)
    except (ValidationError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def mark_language(response: Response) -> Response:
    """Say which language an answer's words are in, and that they depend on Accept-Language."""
    lang = g.get("language")
    if lang is not None:
        response.headers["Content-Language"] = CONTENT_LANGUAGE[lang]
        response.vary.add("Accept-Language")
    return response


def init_app(app: Flask) -> None:
    app.after_request(mark_language)
