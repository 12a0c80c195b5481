"""Drive a real headless Chromium (Debian's ``/usr/bin/chromium``) with Python playwright.

Used for the viewer's screenshot, its browser tests and its benchmark. Playwright is given the
browser's path (``executable_path``): it never downloads a browser of its own.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.errors import UserError

DEFAULT_BROWSER = "/usr/bin/chromium"
# headless Chromium on a machine with no GPU and no network beyond the package registries
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_browser(path: str | None = None) -> Path | None:
    """The Chromium executable: ``path`` if given, else ``/usr/bin/chromium`` or ``chromium`` on the PATH."""
    for candidate in ([path] if path else [DEFAULT_BROWSER, shutil.which("chromium") or ""]):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@contextmanager
def chromium_page(executable: str | Path | None = None, timeout_s: float = 120.0) -> Iterator[Any]:
    """A fresh headless Chromium page (new profile each time).

    Raises:
        UserError: playwright is not installed or the browser is not found (one line, naming it).
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise UserError("playwright is not installed: run `pip install -e .[browser]` (it drives the "
                        "system's Chromium; install that with `apt-get install chromium`)") from None
    browser_path = find_browser(str(executable) if executable else None)
    if browser_path is None:
        raise UserError(f"{executable or DEFAULT_BROWSER}: Chromium not found (install it with "
                        "`apt-get install chromium`, or set browser=PATH)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(browser_path), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout_s * 1e3)
            yield page
        finally:
            browser.close()


def wait_for_frame(page: Any, frames: int = 1, timeout_s: float = 120.0) -> dict[str, Any]:
    """Wait until the viewer's canvas has drawn ``frames`` frames (or shown an error).

    Returns:
        ``frame``, ``ms`` (the page's ``data-ms``), ``load_ms`` (navigation to first frame), ``provider``
        (``webgpu`` or ``wasm``: the execution provider of the session), ``error`` (the page's one-line
        error, or ``None``), ``width``, ``height``.
    """
    page.wait_for_function(
        "n => { const c = document.getElementById('view'); const e = document.getElementById('error');"
        " return (c && Number(c.dataset.frame || 0) >= n) || (e && !e.hidden && !c.dataset.frame &&"
        " !e.textContent.startsWith('no WebAssembly threads')) }", arg=frames, timeout=timeout_s * 1e3)
    state = page.evaluate(
        "() => { const c = document.getElementById('view'); const e = document.getElementById('error');"
        " return {frame: Number(c.dataset.frame || 0), ms: Number(c.dataset.ms || NaN),"
        " load_ms: Number(c.dataset.loadMs || NaN), encode_ms: Number(c.dataset.encodeMs || NaN),"
        " model_ms: Number(c.dataset.modelMs || NaN), worker_ms: Number(c.dataset.workerMs || NaN),"
        " prep_ms: Number(c.dataset.prepMs || NaN), shade_ms: Number(c.dataset.shadeMs || NaN),"
        " provider: c.dataset.provider || null, error: e.hidden ? null : e.textContent,"
        " width: c.width, height: c.height} }")
    return dict(state)


def canvas_pixels(page: Any) -> list[int]:
    """The viewer canvas as flat RGBA bytes (row-major)."""
    data = page.evaluate("() => { const c = document.getElementById('view');"
                         " const ctx = c.getContext('2d');"
                         " return Array.from(ctx.getImageData(0, 0, c.width, c.height).data) }")
    return [int(v) for v in data]
