"""The gunicorn worker of the API: gthread, whose own error answers are JSON too.

gunicorn answers a request that it cannot parse (a request line over 4094 bytes: 414,
too many or too large headers: 431, a malformed line or header: 400, an unknown
transfer coding: 501) before Flask sees it, with an HTML page. API.md promises JSON
for every error, so this worker writes those answers as the API's error body instead.
gunicorn builds them in `util.write_error`, which is what the worker replaces, in its
own process only.
"""

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from api.errors import error_body


def write_json_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's error answer, as the API's JSON error body."""
    # Not CODES: gunicorn's 400 is about HTTP itself (a malformed line or header), not about JSON.
    code = reason.lower().replace(" ", "_")
    body = json.dumps(error_body(code, message or reason, [])).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorsWorker(ThreadWorker):
    """A gthread worker whose answers to unparsable requests are JSON."""

    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()
