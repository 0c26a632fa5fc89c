"""The web dashboard: one page at `/` that draws everything from the public /api/v1 endpoints.

The page, its script, styles and label catalog are the app's static files (api/static);
the plotting library is served from the installed `plotly` package, so the dashboard
works with no internet. Only `GET /api/v1/lessons` is new data: the lessons of
examples/ with the body that submits each one as it stands.
"""

from functools import cache
from pathlib import Path

from flask import Blueprint, Response, current_app

from api.errors import ApiError
from api.language import request_language
from api.lessons import lessons

bp = Blueprint("dashboard", __name__)

# A day: the library changes only with the installed package.
VENDOR_MAX_AGE = 86400


def plotly_js() -> Path | None:
    """plotly.min.js of the installed `plotly` package, or None where it is missing."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


@bp.get("/")
def index():
    """The single page; it routes by the URL's fragment (#/experiments/ID, #/sweeps/ID)."""
    page = Path(current_app.static_folder, "index.html").read_bytes()
    response = Response(page, mimetype="text/html")
    response.cache_control.no_cache = True
    return response


@cache
def plotly_bytes() -> bytes | None:
    """The library's text, read once per process (5 MB): no file handle is left to a client that hangs up."""
    path = plotly_js()
    return path.read_bytes() if path is not None else None


@bp.get("/vendor/plotly.min.js")
def vendor_plotly() -> Response:
    """The plotting library from the installed package: no CDN, so the page works offline."""
    body = plotly_bytes()
    if body is None:
        raise ApiError(404, "plotly is not installed: pip install plotly")
    response = Response(body, mimetype="text/javascript")
    response.cache_control.public = True
    response.cache_control.max_age = VENDOR_MAX_AGE
    return response


def readable_lessons() -> list[dict]:
    """The lessons whose files can be read: an install without examples/ lists none rather than failing."""
    try:
        return lessons(request_language())
    except (OSError, ValueError):
        return []


@bp.get("/api/v1/lessons")
def list_lessons() -> dict:
    """The lessons in teaching order, each with the body to POST (to /experiments or /sweeps, by `kind`)."""
    return {"lessons": readable_lessons()}
