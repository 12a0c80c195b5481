"""The web viewer: a static page (``web/``: HTML, ES modules, the WebAssembly encoder) that runs the exported
student with onnxruntime-web (a ray model on the page's rays, an image model on its camera: one call a
frame), its writer (``python -m export.viewer``, :mod:`export.viewer.page`), the loopback server with the
cross-origin headers threads need (:mod:`export.viewer.server`) and the headless-Chromium screenshot
(:mod:`export.viewer.browser`)."""
