"""Which language a reader asked for: Accept-Language with its weights, and the POSIX locale."""

import pytest

from shared.languages import from_accept_language, from_locale, language_of


@pytest.mark.parametrize("header, expected", [
    ("zh", "zh"), ("zh-CN", "zh"), ("zh-Hans", "zh"), ("zh-Hans-CN", "zh"), ("zh_TW", "zh"), ("ZH-cn", "zh"),
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("en;q=0.5, zh;q=0.9", "zh"),
    ("fr-FR, zh;q=0.3", "zh"),      # no French: the best of ours that the reader named
    ("fr-FR, de;q=0.9", "en"),      # none of ours: English
    ("zh;q=0, en;q=0.1", "en"),     # q=0 means "not this one"
    ("zh;q=0", "en"),
    ("*", "en"), ("", "en"), ("zh;q=abc", "en"), (";;,,", "en"), ("zh;q=2", "en"),
    ("en, zh", "en"),               # equal weights: the order the reader gave
    ("zh , en", "zh"),
])
def test_accept_language(header, expected):
    assert from_accept_language(header) == expected


@pytest.mark.parametrize("environ, expected", [
    ({"LANG": "zh_CN.UTF-8"}, "zh"), ({"LANG": "zh_TW.Big5"}, "zh"), ({"LANG": "en_GB.UTF-8"}, "en"),
    ({"LANG": "C.UTF-8"}, None), ({"LANG": "de_DE.UTF-8"}, None), ({}, None),
    ({"LC_ALL": "en_US.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"LC_MESSAGES": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}, "zh"),
    ({"LC_ALL": "", "LANG": "zh_CN"}, "zh"),
])
def test_locale(environ, expected):
    assert from_locale(environ) == expected


def test_language_of():
    assert language_of("zh-Hant-HK") == "zh" and language_of("en") == "en" and language_of("eng") is None
