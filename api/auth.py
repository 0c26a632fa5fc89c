"""API tokens (API.md): with tokens configured, every /api/v1 request names one, and each token is a tenant.

A token is never written to Redis or to a log: the app compares SHA-256 digests, and
a tenant's id (what records carry) is another hash of the token, so that neither
Redis nor a log line holds anything that would let its reader call the API. A request's token
is hashed and compared with every configured digest by `hmac.compare_digest`,
without stopping at a match, so that the time taken says nothing about which
token, or how much of one, was right.
"""

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app, g, request

from api.errors import ApiError
from api.resources import get_resources

EXTENSION = "gradtrace.auth"
# Only the API proper needs a token: /healthz, /readyz, /openapi.json and /docs stay open.
PROTECTED_PREFIX = "/api/v1"
# Domain separation: a tenant id is not the token's plain digest that the app compares.
TENANT_SALT = b"gradtrace-tenant:"


class TokenFileError(ValueError):
    """A tokens file that cannot be read: the API refuses to start rather than run open."""


def read_tokens(listed: str | Iterable[str] | None, path: Path | str | None) -> list[str]:
    """The tokens of a comma-separated list (or a list) and of a file (one a line, "#" comments), once each."""
    parts = (listed or "").split(",") if isinstance(listed, str) or listed is None else list(listed)
    tokens = [part.strip() for part in parts]
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise TokenFileError(f"cannot read the tokens file {path}: {error.strerror}") from None
        tokens += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return list(dict.fromkeys(token for token in tokens if token))


def tenant_id(token: str) -> str:
    """The id that a token's records carry: a hash, so that Redis never holds a usable token."""
    return hashlib.sha256(TENANT_SALT + token.encode()).hexdigest()[:32]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Tokens:
    """The configured tokens as (digest, tenant) pairs; empty: an open service with the one tenant ""."""

    entries: tuple[tuple[bytes, str], ...]

    @classmethod
    def of(cls, tokens: Iterable[str]) -> "Tokens":
        return cls(tuple((_digest(token), tenant_id(token)) for token in tokens))

    def tenant(self, presented: str) -> str | None:
        """The tenant of a presented token, or None; the same work whichever token (if any) matches."""
        digest, found = _digest(presented), None
        for known, tenant in self.entries:
            if hmac.compare_digest(digest, known):
                found = tenant
        return found


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def unauthorized(message: str) -> ApiError:
    """The 401 of API.md; the message never repeats what the client sent."""
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="gradtrace"'})


def authenticate() -> None:
    """Before every request: set `g.tenant` from the token, or refuse; then the tenant's rate limit."""
    tokens: Tokens = current_app.extensions[EXTENSION]
    if not tokens.entries or not request.path.startswith(PROTECTED_PREFIX):
        return
    presented = bearer_token()
    if presented is None:
        raise unauthorized("this API needs a token: send Authorization: Bearer <token>")
    tenant = tokens.tenant(presented)
    if tenant is None:
        raise unauthorized("the token is not valid")
    g.tenant = tenant
    limiter = get_resources().rate_limiter
    wait = limiter.take(tenant)
    if wait:
        raise ApiError(429, f"rate limit: at most {limiter.rate:g} requests a second per token "
                            f"(bursts of {limiter.burst}); retry after {wait} s", headers={"Retry-After": str(wait)})


def init_app(app: Flask) -> Tokens:
    """Read the tokens from the app's config and check every /api/v1 request against them."""
    tokens = Tokens.of(read_tokens(app.config["API_TOKENS"], app.config["API_TOKENS_FILE"]))
    app.extensions[EXTENSION] = tokens
    # A URL value preprocessor rather than before_request: those run first, and the check of the ids in
    # the path (api/validation.py) is one; registered before it, a request without a token is a 401
    # whatever its path holds.
    app.url_value_preprocessor(lambda endpoint, values: authenticate())
    return tokens
