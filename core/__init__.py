"""Geometry, math and the shared formats: cameras (one convention), rays, NDC, volume rendering, the camera
rig, the empty-space grid, metrics; the scene-facts record, shards and checkpoint I/O; the one-line user
errors and config value checks they raise.

``core`` imports nothing else of this project (a test checks it), so every package can depend on it.
"""
