"""Removing uniform borders before a copy descriptor looks at an image.

Padding is a common copy edit (letterboxing, a coloured frame, a square canvas around a portrait)
and a descriptor that resizes to a square sees the padded copy shrunk and squashed. Trimming each
side's run of uniform rows or columns first gives the copy back its original's framing; applied to
every image alike (originals too), it is symmetric: an original on a plain background and its
padded copy both come down to the same content box.

A line is border when nearly all its pixels are within ``tolerance`` (per channel, 0-255) of the
colour of the side's outermost line, and their mean difference is small; JPEG ringing along the
seam is what the tolerance absorbs, and up to one JPEG block (8-16 pixels) of border may stay
beside the picture. Trimming repeats (a pad around an image that had its own plain margin) and
never cuts an image below ``min_keep`` of either side: an image that is nearly all one colour is
left as it is.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

TOLERANCE = 24  # per-channel difference from the border colour still counted as border
MIN_FRACTION = 0.97  # share of a line's pixels within the tolerance for the line to be border
MEAN_TOLERANCE = 3.0
MIN_KEEP = 0.25  # never keep less than this fraction of a side
MAX_ROUNDS = 3
SEARCH_SIDE = 384  # larger images are searched on a box-filtered copy about this size


def _border_lines(chunk: np.ndarray, colour: np.ndarray, tolerance: int, min_fraction: float):
    """Which lines of ``chunk`` ([m, length, 3]) are border of ``colour``."""
    diff = np.abs(chunk.astype(np.int16) - colour).max(axis=-1)  # [m, length]
    return ((diff <= tolerance).mean(axis=1) >= min_fraction) & (
        diff.mean(axis=1) <= MEAN_TOLERANCE
    )


def _border_run(
    lines: np.ndarray, tolerance: int, min_fraction: float, previous: np.ndarray | None
) -> tuple[int, np.ndarray | None]:
    """How many leading lines of ``lines`` ([n, length, 3] uint8, outermost first) are border, and
    its colour. A side already trimmed to ``previous`` continues only into a different colour (a
    second border), never into more of the same: that is how a smooth gradient would creep in.

    Lines are looked at outermost first, in chunks that double, up to the first that is not
    border: most sides have none, and their cost is one line, not the whole image."""
    colour = np.median(lines[0], axis=0)
    if previous is not None and np.abs(colour - previous).max() <= tolerance:
        return 0, previous
    if not _border_lines(lines[:1], colour, tolerance, min_fraction)[0]:
        return 0, previous  # the outermost line itself is not uniform: no border on this side
    done, step = 1, 8
    while done < len(lines):
        inside = np.flatnonzero(
            ~_border_lines(lines[done : done + step], colour, tolerance, min_fraction)
        )
        if inside.size:
            return done + int(inside[0]), colour
        done, step = done + step, 2 * step
    return len(lines), colour


def content_box(
    pixels: np.ndarray,
    tolerance: int = TOLERANCE,
    min_fraction: float = MIN_FRACTION,
    min_keep: float = MIN_KEEP,
) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of ``pixels`` ([H, W, 3] uint8) inside its uniform borders;
    the whole image when trimming would keep less than ``min_keep`` of a side."""
    height, width = pixels.shape[:2]
    left, top, right, bottom = 0, 0, width, height
    colours: list[np.ndarray | None] = [None] * 4  # top, bottom, left, right
    for _ in range(MAX_ROUNDS):
        box = pixels[top:bottom, left:right]
        if box.shape[0] < 2 or box.shape[1] < 2:
            break
        found = list(colours)
        t, found[0] = _border_run(box, tolerance, min_fraction, colours[0])
        b, found[1] = _border_run(box[::-1], tolerance, min_fraction, colours[1])
        if t + b >= box.shape[0]:
            break
        cols = box[t : box.shape[0] - b].transpose(1, 0, 2)
        lft, found[2] = _border_run(cols, tolerance, min_fraction, colours[2])
        rgt, found[3] = _border_run(cols[::-1], tolerance, min_fraction, colours[3])
        if lft + rgt >= cols.shape[0] or not (t or b or lft or rgt):
            break
        new = (left + lft, top + t, right - rgt, bottom - b)
        if new[2] - new[0] < min_keep * width or new[3] - new[1] < min_keep * height:
            break
        left, top, right, bottom = new
        colours = found
    return left, top, right, bottom


def trim_uniform_borders(image: Image.Image) -> Image.Image:
    """``image`` (RGB) cropped to :func:`content_box`; the same object when there is no border.

    A large image is searched on a copy reduced by an integer factor (block means: a border stays
    uniform, a block straddling its edge does not), so the box keeps at most that factor's pixels
    of border; the cost stays that of a ~384-pixel image."""
    factor = max(1, -(-max(image.size) // SEARCH_SIDE))
    small = image.reduce(factor) if factor > 1 else image
    left, top, right, bottom = content_box(np.asarray(small))
    if (left, top, right, bottom) == (0, 0, small.width, small.height):
        return image
    box = (
        left * factor,
        top * factor,
        min(image.width, right * factor),
        min(image.height, bottom * factor),
    )
    return image.crop(box)
