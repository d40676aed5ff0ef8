"""Pixel verification of a candidate copy pair: is one image a rescaled window of the other?

Crops, pads, meme and screenshot frames, and a picture pasted onto another image all leave one
image's pixels inside the other's, rescaled. A global descriptor sees a different picture (a crop
loses a distinctive part, a frame adds one); the pixels still line up. :func:`window_score` looks
for that: each image (uniform borders cropped, grey, long side :data:`WORK_SIDE`, slightly blurred)
is rescaled to :data:`SCALE_STEPS` sizes from :data:`MIN_SCALE` of the largest size that fits in
the other up to it, in both directions and mirrored, and slid over the other; the score is the best
normalised cross-correlation (NCC, so brightness and contrast changes do not matter).

Four guards keep unrelated images apart. A window of the target much flatter than the template (a
plain sky against a textured template) scores -1 instead of the noisy NCC of a near-zero variance;
a template smaller than :data:`MIN_TEMPLATE_SIDE` pixels or nearly flat is not tried (a small patch
finds its match almost anywhere); at the best position the fine structure (the image less a blur
of it) must line up too (:data:`DETAIL_SLACK`: two pictures sharing one big edge, a disc against a
horizon, correlate in grey, not in detail), and so must most cells of a grid over the template
(:data:`CELL_SLACK`); and a template may not cover the whole target (:data:`MAX_COVER`): two
different pictures in one meme or screenshot template match whole-to-whole on the shared frame,
while a crop, a frame or a pasted picture is a strict window. Copies with the same framing (a
re-encode, a colour change, a pad once borders are cropped) are left to the descriptor.

Measured on the tuning split of the real-image benchmark (``lvd bench copydetect``; 400 copy
pairs, 300 look-alike pairs, 300 random pairs): at a score of 0.9, 34% of copy pairs pass, no
look-alike and no random pair (without the last two rules: 58% / 1.2% / 0, and on the issue-10
real copy set two pictures in one phone-screenshot template were merged). On the kNN pairs of a
trained descriptor some different pictures still pass: Open Clip Art stars with more or fewer
points and repeating patterns (one is a window of the other). On the demo's synthetic web, of
5,273 pairs in the band under the threshold, 9 planted copies and no other pair pass.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from curation.imaging import DEFAULT_MAX_PIXELS, decode_rgb
from curation.models.borders import trim_uniform_borders

WORK_SIDE = 128  # long side, in pixels, of the prepared image
BLUR_SIGMA = 0.8  # Gaussian blur of the prepared image: JPEG blocks and resampling noise
MIN_SCALE = 0.4  # smallest template, relative to the largest that fits in the target
SCALE_STEPS = 16  # template sizes tried per direction (geometric steps)
# A template may cover at most this share of the target: a copy that is the whole of the other image
# (same framing) is the descriptor's to find; two pictures in one meme or screenshot template match
# whole-to-whole on the shared frame.
MAX_COVER = 0.85
MIN_TEMPLATE_SIDE = 24  # pixels: smaller templates match almost anywhere
MIN_TEMPLATE_STD = 6.0  # grey levels: flatter templates are not tried
MIN_WINDOW_CONTRAST = 0.3  # a target window's std below this share of the template's scores -1
MIN_WINDOW_STD = 4.0  # grey levels, the floor of the rule above
DETAIL_SIGMA = 3.0  # the fine structure: the prepared image less this blur of it
# A match must also line up in fine structure: its NCC there plus this slack caps the score (a
# detail NCC of 0.6 is needed for 0.9). Blurred copies keep enough of it; two pictures that share
# one big edge (a disc against a horizon) do not.
DETAIL_SLACK = 0.3
# And line up across the whole window: the share of textured cells (a grid of CELL_GRID x CELL_GRID)
# matching at NCC >= CELL_MIN_NCC, plus this slack, caps the score too (3/4 of the cells for 0.9).
CELL_GRID = 6
CELL_MIN_NCC = 0.5
CELL_SLACK = 0.15


def prepare(image: Image.Image) -> np.ndarray:
    """``image`` (RGB) as :func:`window_score` compares it: borders cropped, grey float32, long
    side :data:`WORK_SIDE`, blurred."""
    image = trim_uniform_borders(image)
    grey = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    height, width = grey.shape
    scale = WORK_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    grey = cv2.resize(grey, size, interpolation=interpolation)
    return cv2.GaussianBlur(grey, (0, 0), BLUR_SIGMA)


def prepare_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """:func:`prepare` of encoded image bytes (a JPEG is decoded at a reduced scale); raises
    :class:`curation.imaging.ImageRejected` for bytes that do not decode."""
    side = 2 * WORK_SIDE
    return prepare(decode_rgb(data, max_pixels, draft_size=(side, side)))


def ncc_map(target: np.ndarray, template: np.ndarray) -> np.ndarray:
    """NCC of ``template`` at every position inside ``target`` (both grey float32); windows much
    flatter than the template score -1."""
    height, width = template.shape
    n = height * width
    centred = template - template.mean()
    template_norm = float(np.sqrt((centred * centred).sum()))
    products = cv2.matchTemplate(target, centred, cv2.TM_CCORR)
    rows, cols = products.shape
    box = {"ksize": (width, height), "normalize": False, "anchor": (0, 0)}
    box["borderType"] = cv2.BORDER_CONSTANT
    sums = cv2.boxFilter(target, cv2.CV_64F, **box)[:rows, :cols]
    squares = cv2.boxFilter(target.astype(np.float64) ** 2, cv2.CV_64F, **box)[:rows, :cols]
    window_norm = np.sqrt(np.maximum(squares - sums * sums / n, 0.0))
    floor = max(MIN_WINDOW_STD, MIN_WINDOW_CONTRAST * template_norm / np.sqrt(n)) * np.sqrt(n)
    score = products / np.maximum(window_norm * template_norm, 1e-6)
    return np.where(window_norm >= floor, score, -1.0)


def _detail(image: np.ndarray) -> np.ndarray:
    """``image`` less its coarse shading: the fine structure two copies share and two pictures
    with one big edge in common do not."""
    return image - cv2.GaussianBlur(image, (0, 0), DETAIL_SIGMA)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / norm if norm > 1e-6 else -1.0


def _best_positions(query: np.ndarray, target: np.ndarray):
    """``(ncc, template, row, col)`` per size of ``query`` that fits in ``target``: the rescaled
    query and its best NCC position."""
    target_h, target_w = target.shape
    query_h, query_w = query.shape
    fit = min(target_h / query_h, target_w / query_w)
    for scale in fit * np.geomspace(MIN_SCALE, 1.0, SCALE_STEPS):
        height, width = round(query_h * scale), round(query_w * scale)
        if min(height, width) < MIN_TEMPLATE_SIDE or height > target_h or width > target_w:
            continue
        if height * width > MAX_COVER * target_h * target_w:
            continue
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        template = cv2.resize(query, (width, height), interpolation=interpolation)
        if template.std() < MIN_TEMPLATE_STD:
            continue
        scores = ncc_map(target, template)
        row, col = np.unravel_index(int(np.argmax(scores)), scores.shape)
        yield float(scores[row, col]), template, int(row), int(col)


def _best_match(directions: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The best over the directions' sizes of the smaller of the NCC, the fine-structure NCC plus
    :data:`DETAIL_SLACK` and the matched cells plus :data:`CELL_SLACK` (-1 when no size fits).
    Sizes are checked from the highest NCC down, stopping where the NCC alone cannot beat the best:
    the same result as checking every size, for a fraction of the work."""
    found = []
    for index, (query, target) in enumerate(directions):
        found += [(ncc, index, *rest) for ncc, *rest in _best_positions(query, target)]
    found.sort(key=lambda item: -item[0])
    best, details = -1.0, {}
    for ncc, index, template, row, col in found:
        if ncc <= best:
            break
        target = directions[index][1]
        if index not in details:
            details[index] = _detail(target)
        height, width = template.shape
        window = (slice(row, row + height), slice(col, col + width))
        detail = _correlation(_detail(template), details[index][window])
        cells = _cells_matched(template, target[window])
        best = max(best, min(ncc, detail + DETAIL_SLACK, cells + CELL_SLACK))
    return best


def contained(query: np.ndarray, target: np.ndarray) -> float:
    """How well ``query``, rescaled, matches a window of ``target``: at the best NCC position of
    each size, the smaller of that NCC, the NCC of the fine structure (:func:`_detail`) plus
    :data:`DETAIL_SLACK` and the share of matched cells plus :data:`CELL_SLACK`; the best over
    sizes (-1 when no size fits)."""
    return _best_match([(query, target)])


def _cells_matched(template: np.ndarray, window: np.ndarray) -> float:
    """The share of the template's textured cells (a :data:`CELL_GRID` grid; flat cells say
    nothing) whose NCC with the window's cell reaches :data:`CELL_MIN_NCC`: a copy lines up
    everywhere, two pictures in one frame template only where the frame is."""
    height, width = template.shape
    rows = np.linspace(0, height, CELL_GRID + 1).round().astype(int)
    cols = np.linspace(0, width, CELL_GRID + 1).round().astype(int)
    textured = matched = 0
    for r0, r1 in zip(rows[:-1], rows[1:]):
        for c0, c1 in zip(cols[:-1], cols[1:]):
            cell, other = template[r0:r1, c0:c1], window[r0:r1, c0:c1]
            if max(cell.std(), other.std()) < MIN_TEMPLATE_STD:
                continue
            textured += 1
            matched += _correlation(cell, other) >= CELL_MIN_NCC
    return matched / textured if textured else -1.0


def window_score(a: np.ndarray, b: np.ndarray, mirror: bool = True) -> float:
    """How well one of two prepared images (:func:`prepare`) is a rescaled window of the other
    (and, with ``mirror``, of the other's mirror image): the best NCC, in [-1, 1]."""
    directions = [(a, b), (b, a)]
    if mirror:
        flipped = np.ascontiguousarray(a[:, ::-1])
        directions += [(flipped, b), (b, flipped)]
    return _best_match(directions)
