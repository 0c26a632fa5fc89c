"""The dashboard's routes in-process: the page, its files, the plotting library, the lessons and the label catalog.

What the page draws is checked in a real browser by tests/integration/test_dashboard.py.
"""

import json
import re
from pathlib import Path

from api.lessons import lessons, load

STATIC = Path(__file__).resolve().parents[2] / "api" / "static"


def test_the_page_and_every_file_it_names_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "no-cache" in page.headers["Cache-Control"]
    html = page.get_data(as_text=True)
    # /docs is the API's own page (README: Bad input and OpenAPI), linked from the header.
    named = [path for path in re.findall(r'(?:src|href)="(/[^"]+)"', html) if path != "/docs"]
    assert set(named) == {"/static/dashboard.css", "/vendor/plotly.min.js", "/static/i18n.js", "/static/dashboard.js",
                          "/static/home.js", "/static/experiment.js", "/static/sweep.js"}
    for path in named:
        response = client.get(path)
        assert response.status_code == 200 and len(response.get_data()) > 100, path
        response.close()
    assert "https://" not in html and "http://" not in html  # nothing from the internet


def test_the_plotting_library_comes_from_the_installed_package(client):
    response = client.get("/vendor/plotly.min.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert response.cache_control.max_age == 86400
    assert b"plotly.js" in response.get_data()[:2000]


def test_lessons_are_listed_with_the_body_that_submits_them(client):
    answer = client.get("/api/v1/lessons").get_json()["lessons"]
    assert [lesson["name"] for lesson in answer] == [lesson["name"] for lesson in lessons()]
    for lesson in answer:
        assert lesson["body"] == load(lesson["name"])
        assert lesson["kind"] == ("sweep" if "grid" in lesson["body"] else "experiment")
        assert lesson["title"] and lesson["summary"] and lesson["figure"]


def test_lessons_are_listed_in_chinese_when_asked(client):
    english = client.get("/api/v1/lessons").get_json()["lessons"]
    for asked in ({"query_string": {"lang": "zh"}}, {"headers": {"Accept-Language": "zh-CN,zh;q=0.9"}}):
        chinese = client.get("/api/v1/lessons", **asked).get_json()["lessons"]
        assert [lesson["name"] for lesson in chinese] == [lesson["name"] for lesson in english]
        for zh, en in zip(chinese, english):
            assert zh["body"] == en["body"] and zh["kind"] == en["kind"]
            for field in ("title", "summary", "figure"):
                assert zh[field] != en[field] and any("\u4e00" <= char <= "\u9fff" for char in zh[field])
    assert client.get("/api/v1/lessons", headers={"Accept-Language": "fr"}).get_json()["lessons"] == english


def test_a_lesson_body_is_accepted_as_it_stands(client):
    lesson = next(item for item in client.get("/api/v1/lessons").get_json()["lessons"] if item["kind"] == "experiment")
    response = client.post("/api/v1/experiments", json=lesson["body"])
    assert response.status_code == 202, response.get_json()


def catalog(language: str) -> dict[str, str]:
    """One language's block of api/static/i18n.js (each block is a JSON object literal)."""
    text = (STATIC / "i18n.js").read_text()
    block = re.search(rf"\n    {language}: (\{{.*?\n    \}})", text, re.S).group(1)
    return json.loads(block)


def test_every_label_is_in_english_and_chinese_and_every_used_label_exists():
    english, chinese = catalog("en"), catalog("zh")
    assert english.keys() == chinese.keys()
    assert all(chinese[key] and chinese[key] != english[key] for key in english if not key.startswith("col.id"))
    used = {key for script in STATIC.glob("*.js") for key in re.findall(r'\bt\("([a-z_.]+)"', script.read_text())}
    used |= set(re.findall(r'data-i18n="([a-z_.]+)"', (STATIC / "index.html").read_text()))
    assert used and used <= english.keys()
