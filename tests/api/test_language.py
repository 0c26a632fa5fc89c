"""The diagnosis in the answer's language: ?lang= or Accept-Language, on experiments, lists and sweeps;
stored records (English words, verdict and evidence) read in Chinese with the same numbers."""

import re

import pytest

from shared.diagnosis import find
from shared.diagnosis_texts import render
from shared.spec import ExperimentSpec
from tests.api.test_experiments import URL, claim, submit
from tests.shared.test_diagnosis_texts import CASES, numbers

CJK = re.compile(r"[\u4e00-\u9fff]")


def stored_diagnosis(verdict: str) -> tuple[dict, dict]:
    """A spec and the diagnosis a worker would store for it (English words, the evidence)."""
    fields, found = CASES[verdict]
    spec = ExperimentSpec.model_validate(fields)
    finding = find(spec, found)
    diagnosis = {"verdict": finding.verdict, "reasons": [render(text) for text in finding.reasons],
                 "advice": [render(text) for text in finding.advice], "evidence": found, "suggested_spec": None}
    return fields, diagnosis


def finished(client, store, verdict: str = "vanishing", diagnosis: dict | None = None) -> str:
    fields, stored = stored_diagnosis(verdict)
    experiment_id = submit(client, **fields)
    claim(store, experiment_id)
    summary = {"final_loss": 0.7, "train_seconds": 1.5, "diagnosis": diagnosis or stored}
    assert store.finish(experiment_id, "token", "succeeded", summary=summary, step=1)
    return experiment_id


@pytest.fixture
def vanishing(client, store) -> str:
    return finished(client, store)


def test_english_is_the_default_and_keeps_the_stored_words(client, vanishing):
    _, stored = stored_diagnosis("vanishing")
    response = client.get(f"{URL}/{vanishing}")
    diagnosis = response.get_json()["summary"]["diagnosis"]
    assert diagnosis["reasons"] == stored["reasons"] and diagnosis["advice"] == stored["advice"]
    assert diagnosis["title"] == "Vanishing gradients" and diagnosis["evidence"] == stored["evidence"]
    assert response.headers["Content-Language"] == "en" and "Accept-Language" in response.headers["Vary"]


@pytest.mark.parametrize("how", [
    {"query_string": {"lang": "zh"}},
    {"headers": {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}},
    {"headers": {"Accept-Language": "fr, zh-Hans;q=0.5"}},
])
def test_chinese_by_query_or_header_with_the_same_numbers(client, vanishing, how):
    english = client.get(f"{URL}/{vanishing}").get_json()["summary"]["diagnosis"]
    response = client.get(f"{URL}/{vanishing}", **how)
    chinese = response.get_json()["summary"]["diagnosis"]
    assert response.headers["Content-Language"] == "zh-Hans"
    assert chinese["verdict"] == "vanishing" and chinese["title"] == "梯度消失"
    assert CJK.search(chinese["explanation"])
    for key in ("reasons", "advice"):
        assert len(chinese[key]) == len(english[key])
        for en, zh in zip(english[key], chinese[key]):
            assert numbers(en) == numbers(zh) and CJK.search(zh), (en, zh)
    assert "8.36e-13" in chinese["reasons"][0] and "批归一化" in chinese["advice"][1]
    assert chinese["evidence"] == english["evidence"]


def test_english_when_asked_for_none_of_ours_and_the_query_wins(client, vanishing):
    for headers in ({"Accept-Language": "de-DE,fr;q=0.8"}, {"Accept-Language": "%%%"}, {}):
        assert client.get(f"{URL}/{vanishing}", headers=headers).get_json()["summary"]["diagnosis"]["title"] == \
            "Vanishing gradients"
    response = client.get(f"{URL}/{vanishing}?lang=en", headers={"Accept-Language": "zh"})
    assert response.get_json()["summary"]["diagnosis"]["title"] == "Vanishing gradients"


def test_an_unknown_lang_is_422_and_a_submit_with_one_queues_nothing(client, vanishing, redis_client):
    for url in (f"{URL}/{vanishing}?lang=fr", f"{URL}?lang=zh-CN", f"{URL}/{vanishing}?lang=zh&lang=en"):
        response = client.get(url)
        assert response.status_code == 422 and response.get_json()["error"]["details"][0]["loc"] == ["query", "lang"]
    before = len(client.get(URL).get_json()["experiments"])
    assert client.post(f"{URL}?lang=xx", json={"steps": 5}).status_code == 422
    assert len(client.get(URL).get_json()["experiments"]) == before


def test_the_list_is_in_the_language_asked_for(client, store, vanishing):
    finished(client, store, "dead_units")
    rows = client.get(URL, query_string={"lang": "zh"}).get_json()["experiments"]
    titles = {row["summary"]["diagnosis"]["title"] for row in rows}
    assert titles == {"梯度消失", "神经元死亡"}


def test_a_record_whose_words_cannot_be_rebuilt_keeps_them(client, store):
    # A record of older rules: its evidence no longer shows the verdict it stored.
    old = {"verdict": "exploding", "reasons": ["the gradient grew"], "advice": ["clip"], "evidence": {"depth": 8}}
    experiment_id = finished(client, store, diagnosis=old)
    diagnosis = client.get(f"{URL}/{experiment_id}?lang=zh").get_json()["summary"]["diagnosis"]
    assert diagnosis["title"] == "梯度爆炸" and diagnosis["reasons"] == ["the gradient grew"]
    assert diagnosis["advice"] == ["clip"]


def test_each_point_of_a_sweep_in_the_language_asked_for(client, store):
    fields, stored = stored_diagnosis("vanishing")
    created = client.post("/api/v1/sweeps", json={"base": {**fields, "steps": 5}, "grid": {"seed": [0, 1]}})
    assert created.status_code == 202
    first = created.get_json()["experiments"][0]
    claim(store, first)
    assert store.finish(first, "token", "succeeded", summary={"final_loss": 0.7, "diagnosis": stored}, step=5)
    sweep = client.get(f"/api/v1/sweeps/{created.get_json()['id']}", headers={"Accept-Language": "zh"}).get_json()
    done, waiting = sweep["experiments"]
    assert done["verdict"] == "vanishing" and done["summary"]["diagnosis"]["title"] == "梯度消失"
    assert CJK.search(done["summary"]["diagnosis"]["reasons"][0]) and waiting["summary"] is None
