"""NVILA-Lite's tiling of one image (``image_aspect_ratio: dynamic``), for numpy frames.

The algorithm NVILA documents (``dynamic_preprocess``, after InternVL): among the grids (columns, rows) whose tile
count lies in [min_tiles, max_tiles], take the one whose aspect ratio is closest to the image's; on a tie a later
(larger) grid wins when the image has more than half the pixels of that grid at tile size. The image is resized to
that grid times the tile size (PIL bicubic, NVILA's PIL default) and cut into tiles row by row; when there is more
than one tile, the whole image resized to one tile follows as a thumbnail. Each tile then goes through the tower's
own preprocessing like any image.
"""
from __future__ import annotations

import numpy as np


def candidate_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """(columns, rows) grids with min_tiles <= columns * rows <= max_tiles, by tile count. Among grids with the same
    count the order is that of the set NVILA sorts (CPython's iteration order of small int tuples), which decides
    ties in ``choose_grid``."""
    grids = {(i, j) for n in range(min_tiles, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1)
             if min_tiles <= i * j <= max_tiles}
    return sorted(grids, key=lambda g: g[0] * g[1])


def choose_grid(width: int, height: int, tile: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """The (columns, rows) grid a width x height image is tiled into."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


def tile_image(frame: np.ndarray, tile: int, min_tiles: int = 1, max_tiles: int = 12) -> list[np.ndarray]:
    """HxWx3 uint8 RGB -> tile x tile x 3 uint8 crops: the grid's tiles row by row, then the thumbnail (if more
    than one tile)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame))
    cols, rows = choose_grid(image.width, image.height, tile, min_tiles, max_tiles)
    resized = image.resize((cols * tile, rows * tile), resample=Image.BICUBIC)
    tiles = [np.asarray(resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)))
             for r in range(rows) for c in range(cols)]
    if len(tiles) > 1:
        tiles.append(np.asarray(image.resize((tile, tile), resample=Image.BICUBIC)))
    return tiles
