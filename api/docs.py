"""`GET /docs`: Swagger UI over /openapi.json, served from an installed package, so it works offline.

The swagger-ui files come from the `swagger-ui-bundle-v2` package (swagger-ui 5, the first
major version that reads OpenAPI 3.1); nothing is fetched from a CDN, and the validator
badge, which would call validator.swagger.io, is off. The page is open like /openapi.json
(api/auth.py guards /api/v1 only); "Authorize" takes a token for the document's `bearer`
scheme, and "Try it out" sends it as `Authorization: Bearer <token>`.
"""

import functools
import hashlib
from pathlib import Path

from flask import Blueprint, Response, abort, request, url_for
from markupsafe import escape
from swagger_ui_bundle import swagger_ui_path

bp = Blueprint("docs", __name__)

# The files the page loads, with their media types: fixed here rather than guessed from the
# platform's mime tables, so that the answer is the same everywhere (and as /openapi.json says).
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
# A week: the files change only with the package, and their URLs are the same across versions.
MAX_AGE = 7 * 24 * 3600

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>gradtrace API</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" type="image/png" href="{icon}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{js}"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "{spec}",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  persistAuthorization: true,
  tryItOutEnabled: false,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
}});
</script>
</body>
</html>
"""


def asset_dir() -> Path:
    """The installed swagger-ui files."""
    return Path(str(swagger_ui_path))


@bp.get("/docs")
def docs() -> Response:
    """The Swagger UI page; every URL in it is this app's own."""
    urls = {name: escape(url_for("docs.asset", name=file)) for name, file in
            (("css", "swagger-ui.css"), ("js", "swagger-ui-bundle.js"), ("icon", "favicon-32x32.png"))}
    page = PAGE.format(spec=escape(url_for("openapi.openapi_json")), **urls)
    return Response(page, mimetype="text/html")


@functools.cache
def read_asset(name: str) -> tuple[bytes, str]:
    """A file's bytes and their digest, read once a process: 2 MB in all, and no file left open
    behind a streamed answer that a client drops."""
    data = (asset_dir() / name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:32]


@bp.get("/docs/<name>")
def asset(name: str) -> Response:
    """One of the page's files; any other name is a JSON 404."""
    if name not in ASSETS:
        abort(404, f"no such file of the API docs: {name[:100]}; the docs are at /docs")
    data, digest = read_asset(name)
    response = Response(data, mimetype=ASSETS[name])
    response.set_etag(digest)
    response.cache_control.public = True
    response.cache_control.max_age = MAX_AGE
    return response.make_conditional(request)
