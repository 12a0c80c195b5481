"""Analytic scenes for tests and benchmarks, rendered by ray casting in numpy (nothing imports this back).

* :mod:`~testing.scenes.objects`: object scenes in Blender layout (the tests' tiny sphere at 16x16,
  the box-and-sphere scene of ``scripts/procedural_scene.py``, plain or detail-rich);
* :mod:`~testing.scenes.forward`: the forward-facing tabletop in LLFF layout;
* :mod:`~testing.scenes.photos`: marble-textured photos and masks for COLMAP, with the true poses;
* the parts they share: :mod:`~testing.scenes.raycast` (shapes, shading, the renderer),
  :mod:`~testing.scenes.textures` (smooth and detail-rich textures), :mod:`~testing.scenes.rigs`
  (camera rigs).

This ``__init__`` imports none of them: its modules import each other, and an ``__init__`` that
imported them back would close an import cycle.
"""
