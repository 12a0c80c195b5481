"""Write a procedural test scene: an object scene (Blender layout) or a forward-facing one (LLFF layout).

``--kind object`` (default): an off-centre checkered box and a striped, shaded sphere on a transparent
background, seen from random upper-hemisphere cameras at the NeRF-synthetic radius and field of view,
in NeRF-synthetic (Blender) format. It checks that the pipeline has nothing specific to the demo scene
(``benchmarks/RESULTS.md``, section ``procedural_scene``)::

    python scripts/procedural_scene.py /tmp/blocks && scripts/demo.sh scene.path=/tmp/blocks

``--kind forward``: a tabletop seen as a phone capture sees it, in LLFF layout (``poses_bounds.npy`` and
``images_8/`` at 504 x 378, ``hwf`` at 8x like real LLFF data)::

    python scripts/procedural_scene.py /tmp/table --kind forward

``--detail``: the same geometry and cameras with detail-rich textures (printed text, fine checkers, thin
bars). The scenes are made by :mod:`testing.scenes` (``objects``, ``forward``), which describes them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repository importable

from testing.scenes.forward import FORWARD_WIDTH, write_forward_scene  # noqa: E402
from testing.scenes.objects import write_object_scene  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("root", type=Path, help="output folder")
    parser.add_argument("--kind", choices=("object", "forward"), default="object",
                        help="object: Blender layout, RGBA; forward: LLFF layout, RGB")
    parser.add_argument("--size", type=int, default=None,
                        help="object: image width and height (default 100); forward: image width, a "
                        f"multiple of 4 (height 3/4 of it; default {FORWARD_WIDTH})")
    parser.add_argument("--detail", action="store_true",
                        help="detail-rich textures (printed text, fine checkers, thin bars)")
    args = parser.parse_args(argv)
    if args.kind == "forward":
        try:
            print(write_forward_scene(args.root, args.size or FORWARD_WIDTH, detail=args.detail))
        except ValueError as exc:
            parser.error(str(exc))
    else:
        print(write_object_scene(args.root, args.size or 100, detail=args.detail))


if __name__ == "__main__":
    main()
