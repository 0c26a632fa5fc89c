"""The diagnosis in English and Chinese: every text in both, with the same placeholders and so the same
numbers; every verdict worded again from its evidence exactly as the worker stored it."""

import re
import string

import pytest

from shared.diagnosis import VERDICTS, explain, find
from shared.diagnosis_texts import LANGUAGES, TEXTS, Text, number, render, verdict_text
from shared.spec import ExperimentSpec

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")
CJK = re.compile(r"[\u4e00-\u9fff]")


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def numbers(text: str) -> list[str]:
    return sorted(NUMBER.findall(text))


def test_every_text_is_in_both_languages_with_the_same_placeholders():
    for key, texts in TEXTS.items():
        assert set(texts) == set(LANGUAGES), key
        assert placeholders(texts["en"]) == placeholders(texts["zh"]), key
        assert CJK.search(texts["zh"]) and not CJK.search(texts["en"]), key


@pytest.mark.parametrize("key", sorted(TEXTS))
def test_each_text_shows_the_same_numbers_in_both_languages(key):
    values = iter([1.234567e-13, 0.4216, 37.5, 412, 2.5e6, 0.005, 7])
    params = {name: ("tanh" if name == "activation" else next(values)) for name in placeholders(TEXTS[key]["en"])}
    english, chinese = render(Text(key, params), "en"), render(Text(key, params), "zh")
    assert numbers(english) == numbers(chinese), (english, chinese)
    for name, value in params.items():
        assert number(value) in english and number(value) in chinese


def test_every_verdict_has_a_title_and_an_explanation_in_both_languages():
    terms = {"healthy": "健康", "vanishing": "梯度消失", "exploding": "梯度爆炸", "dead_units": "死亡",
             "saturated": "饱和", "diverged": "发散"}
    for verdict in VERDICTS:
        for lang in LANGUAGES:
            title, explanation = verdict_text(verdict, lang)
            assert title and len(explanation) > len(title)
        assert terms[verdict] in verdict_text(verdict, "zh")[0]


def test_the_chinese_words_are_the_textbook_terms():
    zh = {key: texts["zh"] for key, texts in TEXTS.items()}
    assert "批归一化" in zh["batchnorm"] and "梯度裁剪" in zh["clipped"] and "学习率" in zh["smaller_lr"]
    assert "Xavier 初始化" in zh["xavier"] and "He" in zh["relu_kaiming"] and "残差连接" in zh["batchnorm_or_residual"]
    assert "饱和区" in zh["saturated"] and "死区" in zh["smaller_lr_dead"]


# A spec and evidence that each verdict's rule finds (the numbers are the figures of real runs).
CASES = {
    "diverged": ({"lr": 5.0}, {"depth": 8, "diverged_step": 34, "grad_norm_growth": 1.9e18}),
    "dead_units": ({"optimizer": "adam"}, {"depth": 8, "dead_fraction_mean": 0.75, "dead_fraction_max": 0.95,
                                             "loss_first": 2.3, "loss_last": 1.9}),
    "saturated": ({"activation": "sigmoid", "init": "normal", "init_std": 1.0},
                  {"depth": 8, "saturated_fraction_mean": 0.62, "step0_grad_ratio": 3.1e-5,
                   "step0_signal_ratio": 2.2e-4, "loss_first": 0.7, "loss_last": 0.69}),
    "exploding": ({"arch": "rnn", "dataset": "adding", "clipping": {"mode": "norm", "threshold": 1.0}},
                  {"depth": 1, "grad_norm_growth": 4.2e4, "step0_time_ratio": 3.3e4, "final_time_ratio": 12.0,
                   "clipped_share": 0.95, "grad_norm_median": 8.1, "loss_first": 0.4, "loss_last": 0.18}),
    "vanishing": ({"depth": 20, "activation": "sigmoid", "init": "xavier_uniform"},
                  {"depth": 20, "step0_grad_ratio": 1.03e-13, "step0_signal_ratio": 8.36e-13,
                   "final_grad_ratio": 4.1e-12, "loss_first": 0.738, "loss_last": 0.7}),
    "healthy": ({}, {"depth": 8, "step0_grad_ratio": 1.5, "step0_signal_ratio": 0.9, "loss_first": 0.69,
                     "loss_last": 0.685}),
}


@pytest.mark.parametrize("verdict", VERDICTS)
def test_each_verdict_is_worded_again_from_its_evidence_in_both_languages(verdict):
    fields, found = CASES[verdict]
    spec = ExperimentSpec.model_validate(fields)
    finding = find(spec, found)
    assert finding.verdict == verdict
    english, chinese = explain(verdict, spec, found, "en"), explain(verdict, spec, found, "zh")
    # English is what diagnose() stores, word for word.
    assert english["reasons"] == [render(text) for text in finding.reasons]
    assert english["advice"] == [render(text) for text in finding.advice]
    assert english["reasons"] and (english["advice"] or verdict == "healthy")
    for key in ("reasons", "advice"):
        assert len(english[key]) == len(chinese[key])
        for en, zh in zip(english[key], chinese[key]):
            assert numbers(en) == numbers(zh) and CJK.search(zh), (en, zh)
    assert chinese["title"] == verdict_text(verdict, "zh")[0]


def test_a_verdict_the_rules_no_longer_find_is_not_reworded():
    spec = ExperimentSpec()
    assert explain("vanishing", spec, {"depth": 8, "step0_grad_ratio": 1.0, "step0_signal_ratio": 1.0}, "zh") is None
