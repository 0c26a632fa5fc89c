"""The API on the tests' real Redis (tests/conftest.py), and one on a Redis that is not there."""

import socket
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from api.resources import EXTENSION
from shared.store import Store


@pytest.fixture
def app(redis_url, redis_client) -> Iterator[Flask]:
    app = create_app({"REDIS_URL": redis_url, "TESTING": True})
    yield app
    app.extensions[EXTENSION].close()


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def store(redis_client) -> Store:
    """The real Store on the tests' database, for writing what a worker would write."""
    return Store(redis_client)


def closed_port() -> int:
    """A port on which nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unreachable_url() -> str:
    return f"redis://127.0.0.1:{closed_port()}/0"


@pytest.fixture
def down_app(unreachable_url) -> Iterator[Flask]:
    """The API configured with a Redis that does not answer."""
    app = create_app({"REDIS_URL": unreachable_url, "TESTING": True, "REDIS_TIMEOUT": 1.0})
    yield app
    app.extensions[EXTENSION].close()
