"""Shared core: cameras, rays, volume rendering, scene loading, metrics, checkpoints, config.

``core`` imports nothing else of this project, so every stage can depend on it.
"""
