"""A static file server for the web viewer on the loopback interface, with the two headers it needs.

``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy: require-corp`` make the
page cross-origin isolated, without which browsers give WebAssembly no threads (onnxruntime-web then
silently runs on one). Any static host that sends these two headers serves the viewer folder as well.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
MIME_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
              ".onnx": "application/octet-stream", ".json": "application/json"}


class _Handler(SimpleHTTPRequestHandler):
    isolate = True
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def end_headers(self) -> None:
        if self.isolate:
            for key, value in ISOLATION_HEADERS.items():
                self.send_header(key, value)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


def make_server(root: str | Path, host: str = "127.0.0.1", port: int = 0, isolate: bool = True
                ) -> ThreadingHTTPServer:
    """A server of ``root`` (not started); ``port=0`` takes a free port (``server.server_address``).

    Args:
        root: folder to serve.
        host: interface to bind (loopback by default: the viewer is for this machine unless asked).
        port: TCP port, 0 for any free one.
        isolate: send the cross-origin isolation headers (``False`` only to test the page without them).
    """
    handler = type("Handler", (_Handler,), {"isolate": isolate})
    return ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(root)))


@contextmanager
def serving(root: str | Path, host: str = "127.0.0.1", port: int = 0, isolate: bool = True) -> Iterator[str]:
    """Serve ``root`` in a background thread; yields the base URL (``http://host:port/``)."""
    server = make_server(root, host, port, isolate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
