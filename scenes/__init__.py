"""Scenes: posed photos in, one camera convention out.

Loaders for Blender / nerfstudio ``transforms*.json`` and LLFF ``poses_bounds.npy`` captures (with masks),
the images and masks they read (one extension list, one ``read_mask``, one ``image_size``), and COLMAP
(``python -m scenes.colmap PHOTOS OUT``: structure from motion on a folder of photos, written as a
``transforms.json`` scene). Everything is converted once, at load time, to the OpenCV convention of
:mod:`core.cameras`. Imports only ``core``.
"""
