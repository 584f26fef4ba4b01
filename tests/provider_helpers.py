"""A real HTTP server on 127.0.0.1 that answers the live providers' requests.

``FakeService`` holds the routes and records every request; the ``service`` fixture
(``conftest.py``) runs it on a ``ThreadingHTTPServer`` for one test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).parent / "data" / "providers"
# a made-up API key: tests check it never reaches messages or logs
TEST_KEY = "sk-test-7f3a9c1e5b"
# how often the server thread checks for shutdown (s)
_POLL_S = 0.05
# bs4's warning when entsoe-py parses its XML with the HTML parser (the start of it)
ENTSOE_XML_WARNING = "ignore:It looks like you're using an HTML parser to parse an XML"


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    when: dict[str, str] = field(default_factory=dict)  # query parameters that must match


@dataclass
class FakeService:
    """Routes ``path -> [Route]`` served by a real HTTP server; requests are recorded.

    The first route of a path whose ``when`` parameters all match the query answers.
    """

    url: str = ""
    routes: dict[str, list[Route]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)

    def serve(
        self, path: str, status: int = 200, body: bytes | str | dict = b"", **headers: str
    ) -> None:
        """Answer ``path`` (replacing earlier routes of it)."""
        self.routes[path] = []
        self.add(path, status, body, **headers)

    def add(
        self,
        path: str,
        status: int = 200,
        body: bytes | str | dict = b"",
        when: dict[str, str] | None = None,
        **headers: str,
    ) -> None:
        """Add a route for ``path`` tried after the existing ones."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        headers.setdefault("Content_Type", "application/json")
        self.routes.setdefault(path, []).append(Route(status, body, headers, when or {}))

    def serve_file(self, path: str, name: str) -> None:
        self.serve(path, body=(FIXTURES / name).read_bytes())

    def route(self, path: str, query: dict[str, list[str]]) -> Route:
        for route in self.routes.get(path, []):
            if all(query.get(k) == [v] for k, v in route.when.items()):
                return route
        return Route(404, b'{"error": "not found"}', {"Content_Type": "application/json"})


@contextmanager
def serving() -> Iterator[FakeService]:
    """A :class:`FakeService` answering on a free local port until the block ends."""
    state = FakeService()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            state.requests.append((parts.path, parse_qs(parts.query), dict(self.headers)))
            route = state.route(parts.path, parse_qs(parts.query))
            self.send_response(route.status)
            for key, value in route.headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(_POLL_S,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve_entsoe(service: FakeService, doc: str, body: str, *, paged: bool, **when: str) -> None:
    """Answer ENTSO-E requests for document type ``doc`` (and ``when``) with ``body``.

    entsoe-py pages some queries by ``offset`` (0, 100, ...) until the service answers
    "No matching data found" (:func:`serve_entsoe_no_data`, added last); a paged document
    is the answer to offset 0 only.
    """
    first = {"documentType": doc, **({"offset": "0"} if paged else {}), **when}
    service.add("/api", body=body, when=first, Content_Type="text/xml")


def serve_entsoe_no_data(service: FakeService, no_data: str) -> None:
    """Answer every other ENTSO-E request with the service's "no data" document."""
    service.add("/api", body=no_data, Content_Type="text/xml")
