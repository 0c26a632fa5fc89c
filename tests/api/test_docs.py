"""GET /docs: Swagger UI over /openapi.json from the installed package, no other host named, open without a token."""

import re
from html.parser import HTMLParser

import pytest

from api.app import create_app
from api.resources import EXTENSION

# Hosts a page may name without fetching anything from them: the SVG namespace of inline images.
NAMESPACES = {"www.w3.org"}


class References(HTMLParser):
    """The URLs that a page loads: scripts, stylesheets, icons, images."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        if tag in ("script", "img") and found.get("src"):
            self.urls.append(found["src"])
        if tag == "link" and found.get("href"):
            self.urls.append(found["href"])


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


def hosts(text: str) -> set[str]:
    return set(re.findall(r"https?://([^/\"'\s)<>]+)", text))


@pytest.fixture
def page(client) -> str:
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    return response.get_data(as_text=True)


def test_the_page_loads_swagger_ui_over_the_openapi_document(page):
    assert '"/openapi.json"' in page
    assert "SwaggerUIBundle(" in page and "validatorUrl: null" in page
    urls = references(page)
    assert "/docs/swagger-ui-bundle.js" in urls and "/docs/swagger-ui.css" in urls


def test_every_file_the_page_loads_is_the_apps_own_and_answers(client, page):
    assert hosts(page) == set()
    for url in references(page):
        assert url.startswith("/"), url
        with client.get(url) as response:
            response.get_data()
        assert response.status_code == 200, url
        assert len(response.data) > 500, url
        if url.endswith(".css"):
            css = response.get_data(as_text=True)
            assert response.mimetype == "text/css"
            # Every url() of the stylesheet is inline data: nothing is fetched from anywhere.
            assert all(ref.strip("'\"").startswith("data:") for ref in re.findall(r"url\(([^)]*)\)", css))
            assert hosts(css) <= NAMESPACES
        if url.endswith(".js"):
            assert response.mimetype == "text/javascript"
            assert b"SwaggerUIBundle" in response.data


def test_only_the_pages_files_are_served(client):
    for name in ("index.html", "swagger-ui.js.map", "..%2Fpyproject.toml", "oauth2-redirect.html"):
        response = client.get(f"/docs/{name}")
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found", name


def test_the_docs_stay_open_when_the_api_needs_a_token(redis_url, redis_client):
    app = create_app({"REDIS_URL": redis_url, "TESTING": True, "API_TOKENS": "secret"})
    try:
        client = app.test_client()
        assert client.get("/api/v1/experiments").status_code == 401
        assert client.get("/docs").status_code == 200
        with client.get("/docs/swagger-ui-bundle.js") as response:
            assert response.status_code == 200
        assert client.get("/openapi.json").status_code == 200
    finally:
        app.extensions[EXTENSION].close()


def test_try_it_out_can_send_a_bearer_token(client):
    document = client.get("/openapi.json").get_json()
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    operation = document["paths"]["/api/v1/experiments/{experiment_id}"]["get"]
    assert {"bearer": []} in operation["security"]
    assert "/docs" in document["paths"]
