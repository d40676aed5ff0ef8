"""A seeded real-image copy-detection set: pictures, DISC21-style copies, distractors, look-alikes.

The copies follow the edit families of the DISC21 queries (Douze et al. 2021, "The 2021 Image
Similarity Dataset and Challenge") and of SSCD's training augmentations, written with Pillow and
numpy (AugLy was not used: it pulls in audio and video stacks for a handful of image functions):
crops, rotations, flips, perspective, text and emoji-like overlays, the picture pasted onto another
image, meme and screenshot frames, JPEG, colour changes, blur, pixelation, padding. Every edit draws
its parameters first (:func:`draw_edit`, recorded as JSON in the ground truth) and then applies them
(:func:`apply_edit`), so a test can check what an edit did.

**Tiers.** ``easy``: one mild edit (re-encode, resize, flip, slight crop or brightness, thin
border). ``medium``: one strong edit (crop to half the picture, rotation, text, stickers, colour,
blur, pixelation, wide padding, strong JPEG, a meme frame). ``hard``: one or two medium overlays or
photometric edits, then a hard one (a crop to a quarter or so, perspective, the picture pasted onto
another image, a screenshot frame).

**What counts as a copy.** An image is a copy of a picture when it was made from that picture's
pixels by the edits above; all images of one ``picture_id`` are copies of each other (the pairs a
dedup should merge). Two halves of one photograph that share no pixels are two *different*
pictures (``sibling`` in the picture table): they look alike (same scene, light, camera) but are not
copies. A meme or screenshot frame holding picture A is a copy of A and of nothing else, however
much it looks like the same frame holding picture B: the frame makes different pictures look alike,
which is how union-find chains unrelated pictures into one component (issue 10). Look-alike images
(``kind = lookalike``) are exactly those: another picture placed in a frame template already used
for a copy, recorded with the key of the copy they imitate (``lookalike_of``).

**The set.** Source photographs (:mod:`curation.eval.real_images`) with a long side of at least
``split_min_side`` pixels are cut into two halves (two sibling pictures), the others are used whole;
the texture photographs in :data:`BACKGROUND_SOURCES` are kept out of the pictures and serve only as
backgrounds of picture-in-picture copies. A seeded share of the pictures are distractors (the
unedited picture only); the others are originals with ``n_copies_per_picture`` copies, tiers in
turn. Keys are seeded random hex strings, so key order (which picks the representative) carries no
hint of what an image is.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from curation.eval.real_images import RealPicture, real_pictures

TIERS = ("easy", "medium", "hard")
BACKGROUND_SOURCES = ("brick", "grass", "gravel")
KINDS = ("original", "distractor", "copy", "lookalike")
SAVE_QUALITY = 92  # every image is stored as a JPEG at this quality (after its own edits)

GROUND_TRUTH_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("file", pa.string()),  # relative to the set's folder
        ("picture_id", pa.string()),
        ("kind", pa.string()),  # original | distractor | copy | lookalike
        ("edit", pa.string()),  # edit names joined by "+", in the order applied; null if none
        ("params", pa.string()),  # JSON list of each edit's parameters
        ("tier", pa.string()),  # easy | medium | hard; null for unedited pictures
        ("lookalike_of", pa.string()),  # key of the framed copy a look-alike imitates
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)
PICTURE_SCHEMA = pa.schema(
    [
        ("picture_id", pa.string()),
        ("role", pa.string()),  # original (has copies) | distractor
        ("source_name", pa.string()),
        ("part", pa.string()),  # whole | first | second (halves along the long side)
        ("sibling", pa.string()),  # picture_id of the other half, null for whole pictures
        ("source", pa.string()),  # package:path of the file
        ("licence", pa.string()),
        ("statement", pa.string()),  # the package's own licence wording
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)

_WORDS = (
    "when the",
    "monday",
    "nobody",
    "me",
    "literally",
    "every time",
    "my code",
    "works",
    "did you",
    "see this",
    "breaking",
    "news",
    "wow",
    "same",
    "no way",
    "look at",
    "this one",
    "again",
    "today",
    "mood",
)


# --- drawing helpers -----------------------------------------------------------------------


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=max(6, int(size)))
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: one fixed bitmap size
        return ImageFont.load_default()


def _colour(rng: np.random.Generator) -> list[int]:
    return [int(v) for v in rng.integers(0, 256, 3)]


def fit_box(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(left, top, width, height)`` of an image of ``size`` scaled to fit inside ``box``
    (aspect kept) and centred in it."""
    scale = min(box[0] / size[0], box[1] / size[1])
    width, height = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    return (box[0] - width) // 2, (box[1] - height) // 2, width, height


def _paste_fitted(canvas: Image.Image, picture: Image.Image, box: Sequence[int]) -> None:
    left, top, width, height = fit_box(picture.size, (box[2], box[3]))
    resized = picture.resize((width, height), Image.Resampling.BICUBIC)
    canvas.paste(resized, (box[0] + left, box[1] + top))


def _draw_text(
    draw: ImageDraw.ImageDraw, xy, text: str, size: int, fill, stroke=None, anchor="la"
) -> None:
    font = _font(size)
    kwargs = {"stroke_width": max(1, size // 12), "stroke_fill": stroke} if stroke else {}
    try:
        draw.text(xy, text, fill=tuple(fill), font=font, anchor=anchor, **kwargs)
    except (ValueError, TypeError):  # bitmap fonts know no anchors or strokes
        draw.text(xy, text, fill=tuple(fill), font=font)


def _sticker(draw: ImageDraw.ImageDraw, shape: str, box: Sequence[float], colour) -> None:
    """An emoji-like sticker: a smiley, a star or a heart inside ``box``."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if shape == "smiley":
        draw.ellipse(box, fill=tuple(colour), outline=(0, 0, 0), width=max(1, int(w / 20)))
        for ex in (0.33, 0.67):
            draw.ellipse(
                (x0 + w * (ex - 0.07), y0 + h * 0.3, x0 + w * (ex + 0.07), y0 + h * 0.45),
                fill=(0, 0, 0),
            )
        draw.arc(
            (x0 + w * 0.25, y0 + h * 0.35, x0 + w * 0.75, y0 + h * 0.78),
            20,
            160,
            fill=(0, 0, 0),
            width=max(1, int(w / 14)),
        )
    elif shape == "star":
        cx, cy, r = x0 + w / 2, y0 + h / 2, min(w, h) / 2
        points = [
            (
                cx + (r if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5),
                cy - (r if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5),
            )
            for k in range(10)
        ]
        draw.polygon(points, fill=tuple(colour), outline=(0, 0, 0))
    else:  # heart
        draw.ellipse((x0, y0, x0 + w * 0.55, y0 + h * 0.55), fill=tuple(colour))
        draw.ellipse((x0 + w * 0.45, y0, x1, y0 + h * 0.55), fill=tuple(colour))
        draw.polygon(
            [(x0 + w * 0.03, y0 + h * 0.38), (x1 - w * 0.03, y0 + h * 0.38), (x0 + w / 2, y1)],
            fill=tuple(colour),
        )


def _perspective_coefficients(source: np.ndarray, target: np.ndarray) -> list[float]:
    """Pillow's 8 PERSPECTIVE coefficients mapping output corners ``target`` to input ``source``."""
    rows = []
    for (x, y), (u, v) in zip(target, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.asarray(rows, float), source.reshape(-1).astype(float)).tolist()


# --- frame templates (shared by several pictures: what makes framed copies look alike) --------


@dataclass(frozen=True)
class FrameTemplate:
    """A meme template (caption bars above and below) or a screenshot (a desktop app window, or a
    phone's social-media post with the picture in a third of the screen): a fixed canvas with one
    slot the picture is fitted into."""

    name: str
    style: str  # meme | window | phone
    size: tuple[int, int]
    slot: tuple[int, int, int, int]  # left, top, width, height
    background: tuple[int, int, int]
    ink: tuple[int, int, int]
    accent: tuple[int, int, int]
    texts: tuple[str, ...]

    def render(self, picture: Image.Image) -> Image.Image:
        canvas = Image.new("RGB", self.size, self.background)
        draw = ImageDraw.Draw(canvas)
        width, height = self.size
        if self.style == "meme":
            top, bottom = self.slot[1], height - self.slot[1] - self.slot[3]
            _draw_text(
                draw, (width / 2, top / 2), self.texts[0], int(top * 0.55), self.ink, None, "mm"
            )
            _draw_text(
                draw,
                (width / 2, height - bottom / 2),
                self.texts[1],
                int(bottom * 0.55),
                self.ink,
                None,
                "mm",
            )
        elif self.style == "phone":
            left, top, slot_w, slot_h = self.slot
            draw.rectangle((0, 0, width, 18), fill=(10, 10, 10))  # status bar
            _draw_text(draw, (10, 3), "9:41", 11, (240, 240, 240))
            draw.rectangle((0, 18, width, 60), fill=self.accent)  # app header
            _draw_text(draw, (width / 2, 39), self.texts[0], 16, self.ink, None, "mm")
            draw.ellipse((10, 70, 40, 100), fill=tuple(255 - c for c in self.accent))  # avatar
            _draw_text(draw, (48, 72), self.texts[1], 12, self.ink)
            _draw_text(draw, (48, 88), self.texts[2], 10, (110, 110, 110))
            for k, text in enumerate(self.texts[3:5]):
                _draw_text(draw, (10, 108 + 16 * k), text, 12, self.ink)
            draw.rectangle((left, top, left + slot_w - 1, top + slot_h - 1), fill=(24, 24, 24))
            icons = top + slot_h + 10
            for k in range(4):
                draw.ellipse(
                    (12 + 34 * k, icons, 32 + 34 * k, icons + 20), outline=self.ink, width=2
                )
            for k, text in enumerate(self.texts[5:]):
                _draw_text(
                    draw, (10, icons + 32 + 18 * k), f"@{text}: {self.texts[k]}", 11, self.ink
                )
        else:
            left, top, slot_w, slot_h = self.slot
            draw.rectangle((0, 0, width, 22), fill=self.accent)  # title bar
            for k, colour in enumerate(((237, 106, 94), (245, 191, 79), (98, 197, 84))):
                draw.ellipse((8 + 16 * k, 6, 18 + 16 * k, 16), fill=colour)
            _draw_text(draw, (70, 5), self.texts[0], 12, self.ink)
            draw.rectangle((0, 22, left - 1, height), fill=tuple(int(c * 0.9) for c in self.accent))
            for k, text in enumerate(self.texts[1:]):
                _draw_text(draw, (8, 34 + 22 * k), text, 11, self.ink)
            draw.rectangle((0, height - 16, width, height), fill=self.accent)  # status bar
            draw.rectangle((left, top, left + slot_w - 1, top + slot_h - 1), fill=(24, 24, 24))
        _paste_fitted(canvas, picture, self.slot)
        return canvas


def make_templates(rng: np.random.Generator, n_meme: int, n_screenshot: int) -> list[FrameTemplate]:
    """``n_meme`` meme templates, then ``n_screenshot`` screenshots (windows and phones in turn)."""
    templates = []
    for k in range(n_meme):
        width = int(rng.integers(300, 380))
        bar = int(width * rng.uniform(0.14, 0.2))
        slot_h = int(width * rng.uniform(0.7, 0.85))
        dark = bool(rng.integers(2))
        words = rng.choice(len(_WORDS), 4, replace=False)
        templates.append(
            FrameTemplate(
                name=f"meme{k}",
                style="meme",
                size=(width, bar + slot_h + bar),
                slot=(0, bar, width, slot_h),
                background=(0, 0, 0) if dark else (255, 255, 255),
                ink=(255, 255, 255) if dark else (0, 0, 0),
                accent=(128, 128, 128),
                texts=(
                    f"{_WORDS[words[0]]} {_WORDS[words[1]]}".upper(),
                    f"{_WORDS[words[2]]} {_WORDS[words[3]]}".upper(),
                ),
            )
        )
    for k in range(n_screenshot):
        words = tuple(_WORDS[w] for w in rng.choice(len(_WORDS), 8, replace=False))
        accent = tuple(int(v) for v in rng.integers(150, 230, 3))
        if k % 2:
            width, height = int(rng.integers(280, 320)), int(rng.integers(480, 540))
            slot_h = int(width * rng.uniform(0.55, 0.7))
            templates.append(
                FrameTemplate(
                    f"phone{k}", "phone", (width, height), (10, 146, width - 20, slot_h),
                    (250, 250, 250), (20, 20, 20), accent, words,
                )
            )  # fmt: skip
            continue
        width, height = int(rng.integers(380, 440)), int(rng.integers(280, 330))
        sidebar = int(rng.integers(80, 120))
        shade = int(rng.integers(200, 245))
        templates.append(
            FrameTemplate(
                f"window{k}", "window", (width, height),
                (sidebar + 8, 30, width - sidebar - 16, height - 30 - 24),
                (shade, shade, shade), (20, 20, 20), accent, words[:6],
            )
        )  # fmt: skip
    return templates


# --- edits: parameters drawn first, then applied ------------------------------------------


@dataclass
class EditContext:
    """What edits may draw on besides the picture: frame templates and background images."""

    templates: Sequence[FrameTemplate] = ()
    backgrounds: Sequence[np.ndarray] = ()


def _crop_params(rng, size, area: tuple[float, float]) -> dict:
    width, height = size
    fraction = rng.uniform(*area)
    aspect = math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
    w = min(width, max(8, round(width * math.sqrt(fraction * aspect))))
    h = min(height, max(8, round(height * math.sqrt(fraction / aspect))))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return {"box": [left, top, left + w, top + h]}


def _draw(name: str, rng: np.random.Generator, size: tuple[int, int], ctx: EditContext) -> dict:
    width, height = size
    if name == "jpeg_mild":
        return {"quality": int(rng.integers(50, 86))}
    if name == "jpeg_strong":
        return {"quality": int(rng.integers(8, 25))}
    if name == "resize":
        return {"scale": float(rng.uniform(0.45, 0.85))}
    if name == "flip":
        return {}
    if name == "light_crop":
        return _crop_params(rng, size, (0.75, 0.92))
    if name == "crop":
        return _crop_params(rng, size, (0.45, 0.7))
    if name == "heavy_crop":
        return _crop_params(rng, size, (0.22, 0.4))
    if name == "brightness":
        return {
            "brightness": float(rng.uniform(0.7, 1.3)),
            "contrast": float(rng.uniform(0.75, 1.25)),
        }
    if name in ("thin_pad", "pad"):
        low, high = (0.03, 0.08) if name == "thin_pad" else (0.12, 0.3)
        return {"border": [float(rng.uniform(low, high)) for _ in range(4)], "fill": _colour(rng)}
    if name == "rotate":
        angle = float(rng.uniform(8, 30)) * (1 if rng.integers(2) else -1)
        return {"angle": angle, "fill": [0, 0, 0] if rng.integers(2) else [255, 255, 255]}
    if name == "text":
        n = int(rng.integers(1, 4))
        return {
            "lines": [
                {
                    "text": str(_WORDS[int(rng.integers(len(_WORDS)))]),
                    "size": int(height * rng.uniform(0.08, 0.16)),
                    "xy": [
                        int(rng.integers(0, max(1, width * 2 // 3))),
                        int(rng.integers(0, max(1, height * 5 // 6))),
                    ],
                    "fill": _colour(rng),
                    "stroke": bool(rng.integers(2)),
                }
                for _ in range(n)
            ]
        }
    if name == "emoji":
        stickers = []
        for _ in range(int(rng.integers(1, 4))):
            side = int(min(size) * rng.uniform(0.15, 0.32))
            x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            shape = str(rng.choice(["smiley", "star", "heart"]))
            colour = [255, 204, 0] if shape == "smiley" else _colour(rng)
            stickers.append({"shape": shape, "box": [x, y, x + side, y + side], "colour": colour})
        return {"stickers": stickers}
    if name == "colour":
        mode = str(rng.choice(["saturation", "hue", "greyscale", "tint"]))
        return {
            "mode": mode,
            "amount": float(rng.uniform(0.2, 0.5))
            if mode == "tint"
            else float(rng.uniform(0.0, 2.5))
            if mode == "saturation"
            else float(rng.uniform(0.15, 0.85)),
            "tint": _colour(rng),
        }
    if name == "blur":
        return {"radius": float(rng.uniform(1.5, 4.0))}
    if name == "pixelate":
        return {"block": int(rng.integers(4, 10))}
    if name == "perspective":
        jitter = rng.uniform(-0.18, 0.18, size=(4, 2)) * np.array([width, height])
        corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], float)
        return {"corners": (corners + jitter).round(1).tolist()}
    if name == "picture_in_picture":
        background = int(rng.integers(len(ctx.backgrounds)))
        canvas = [int(width * rng.uniform(1.3, 1.8)), int(height * rng.uniform(1.3, 1.8))]
        scale = float(rng.uniform(0.55, 0.8))
        w, h = max(8, int(canvas[0] * scale)), max(8, int(canvas[1] * scale))
        left_top = [
            int(rng.integers(0, canvas[0] - w + 1)),
            int(rng.integers(0, canvas[1] - h + 1)),
        ]
        return {"background": background, "canvas": canvas, "box": [*left_top, w, h]}
    if name in ("meme_frame", "screenshot_frame"):
        styles = ("meme",) if name == "meme_frame" else ("window", "phone")
        choices = [k for k, t in enumerate(ctx.templates) if t.style in styles]
        return {"template": int(rng.choice(choices))}
    raise KeyError(f"unknown edit {name!r}")


def _apply(name: str, image: Image.Image, p: dict, ctx: EditContext) -> Image.Image:
    if name in ("jpeg_mild", "jpeg_strong"):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=p["quality"])
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if name == "resize":
        size = (max(16, round(image.width * p["scale"])), max(16, round(image.height * p["scale"])))
        return image.resize(size, Image.Resampling.BICUBIC)
    if name == "flip":
        return ImageOps.mirror(image)
    if name in ("light_crop", "crop", "heavy_crop"):
        return image.crop(tuple(p["box"]))
    if name == "brightness":
        image = ImageEnhance.Brightness(image).enhance(p["brightness"])
        return ImageEnhance.Contrast(image).enhance(p["contrast"])
    if name in ("thin_pad", "pad"):
        left, top, right, bottom = (
            round(f * s) for f, s in zip(p["border"], (image.width, image.height) * 2)
        )
        return ImageOps.expand(image, (left, top, right, bottom), fill=tuple(p["fill"]))
    if name == "rotate":
        return image.rotate(
            p["angle"], Image.Resampling.BICUBIC, expand=True, fillcolor=tuple(p["fill"])
        )
    if name == "text":
        image = image.copy()
        draw = ImageDraw.Draw(image)
        for line in p["lines"]:
            stroke = tuple(255 - c for c in line["fill"]) if line["stroke"] else None
            _draw_text(draw, tuple(line["xy"]), line["text"], line["size"], line["fill"], stroke)
        return image
    if name == "emoji":
        image = image.copy()
        draw = ImageDraw.Draw(image)
        for sticker in p["stickers"]:
            _sticker(draw, sticker["shape"], sticker["box"], sticker["colour"])
        return image
    if name == "colour":
        if p["mode"] == "saturation":
            return ImageEnhance.Color(image).enhance(p["amount"])
        if p["mode"] == "greyscale":
            return ImageOps.grayscale(image).convert("RGB")
        if p["mode"] == "tint":
            return Image.blend(image, Image.new("RGB", image.size, tuple(p["tint"])), p["amount"])
        hsv = np.asarray(image.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(p["amount"] * 255)) % 256
        return Image.fromarray(hsv, "HSV").convert("RGB")
    if name == "blur":
        return image.filter(ImageFilter.GaussianBlur(p["radius"]))
    if name == "pixelate":
        small = (max(1, image.width // p["block"]), max(1, image.height // p["block"]))
        reduced = image.resize(small, Image.Resampling.BOX)
        return reduced.resize(image.size, Image.Resampling.NEAREST)
    if name == "perspective":
        width, height = image.size
        target = np.array([[0, 0], [width, 0], [width, height], [0, height]], float)
        coefficients = _perspective_coefficients(np.asarray(p["corners"], float), target)
        return image.transform(
            image.size, Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC
        )
    if name == "picture_in_picture":
        background = Image.fromarray(ctx.backgrounds[p["background"]])
        canvas = ImageOps.fit(background, tuple(p["canvas"]), Image.Resampling.BICUBIC)
        left, top, w, h = p["box"]
        canvas.paste(image.resize((w, h), Image.Resampling.BICUBIC), (left, top))
        return canvas
    if name in ("meme_frame", "screenshot_frame"):
        return ctx.templates[p["template"]].render(image)
    raise KeyError(f"unknown edit {name!r}")


EASY_EDITS = ("jpeg_mild", "resize", "flip", "light_crop", "brightness", "thin_pad")
MEDIUM_EDITS = (
    "crop",
    "rotate",
    "text",
    "emoji",
    "colour",
    "blur",
    "pixelate",
    "pad",
    "jpeg_strong",
    "meme_frame",
)
HARD_EDITS = ("heavy_crop", "perspective", "picture_in_picture", "screenshot_frame")
CHAINABLE = ("text", "emoji", "colour", "blur", "jpeg_strong", "pixelate", "flip")
EDITS = EASY_EDITS + MEDIUM_EDITS + HARD_EDITS


def draw_edit(name: str, rng: np.random.Generator, size: tuple[int, int], ctx: EditContext) -> dict:
    """The seeded parameters of edit ``name`` for an image of ``size`` (JSON-ready)."""
    return _draw(name, rng, size, ctx)


def apply_edit(name: str, image: Image.Image, params: dict, ctx: EditContext) -> Image.Image:
    """``image`` (RGB) with edit ``name`` applied as ``params`` say."""
    return _apply(name, image.convert("RGB"), params, ctx).convert("RGB")


def make_copy(
    picture: Image.Image, tier: str, rng: np.random.Generator, ctx: EditContext
) -> tuple[Image.Image, list[str], list[dict]]:
    """A copy of ``picture`` at ``tier``: the image, the edits applied and their parameters."""
    if tier == "easy":
        names = [str(rng.choice(EASY_EDITS))]
    elif tier == "medium":
        names = [str(rng.choice(MEDIUM_EDITS))]
    elif tier == "hard":
        before = rng.choice(CHAINABLE, size=int(rng.integers(1, 3)), replace=False)
        names = [str(n) for n in before] + [str(rng.choice(HARD_EDITS))]
    else:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    image, params = picture.convert("RGB"), []
    for name in names:
        p = draw_edit(name, rng, image.size, ctx)
        image = apply_edit(name, image, p, ctx)
        params.append(p)
    return image, names, params


# --- the set -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetPicture:
    picture_id: str
    image: np.ndarray
    source: RealPicture
    part: str  # whole | first | second
    sibling: str | None


def _downscale(pixels: np.ndarray, max_side: int) -> np.ndarray:
    image = Image.fromarray(pixels)
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(image)


def set_pictures(
    sources: Sequence[RealPicture], *, max_side: int = 320, split_min_side: int = 600
) -> list[SetPicture]:
    """Pictures of the set: each source whole, or its two halves (along the long side) when its
    long side has at least ``split_min_side`` pixels; each downscaled to ``max_side``."""
    pictures = []
    for source in sources:
        if source.name in BACKGROUND_SOURCES:
            continue
        pixels = source.image
        height, width = pixels.shape[:2]
        if max(width, height) < split_min_side:
            pictures.append(
                SetPicture(source.name, _downscale(pixels, max_side), source, "whole", None)
            )
            continue
        if width >= height:
            halves = pixels[:, : width // 2], pixels[:, width // 2 :]
        else:
            halves = pixels[: height // 2], pixels[height // 2 :]
        ids = (f"{source.name}-1", f"{source.name}-2")
        for k, (part, half) in enumerate(zip(("first", "second"), halves)):
            pictures.append(
                SetPicture(
                    ids[k],
                    _downscale(np.ascontiguousarray(half), max_side),
                    source,
                    part,
                    ids[1 - k],
                )
            )
    return pictures


@dataclass(frozen=True)
class RealCopySet:
    root: Path
    ground_truth: pa.Table  # GROUND_TRUTH_SCHEMA
    pictures: pa.Table  # PICTURE_SCHEMA

    def path(self, key: str) -> Path:
        return self.root / "images" / f"{key}.jpg"


def _keys(rng: np.random.Generator, n: int) -> list[str]:
    keys: list[str] = []
    seen: set[str] = set()
    while len(keys) < n:
        key = f"{int(rng.integers(0, 2**48)):012x}"
        if key not in seen:
            seen.add(key)
            keys.append(key)
    return keys


def build_real_copy_set(
    out_dir: str | Path,
    seed: int = 0,
    n_copies_per_picture: int = 6,
    *,
    distractor_fraction: float = 0.25,
    max_side: int = 320,
    split_min_side: int = 600,
    n_meme_templates: int = 2,
    n_screenshot_templates: int = 4,
    lookalikes_per_template: int = 2,
    sources: Sequence[RealPicture] | None = None,
) -> RealCopySet:
    """Write the set under ``out_dir`` (``images/<key>.jpg``, ``ground_truth.parquet``,
    ``pictures.parquet``) and return it. Same arguments, same bytes."""
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    sources = list(sources) if sources is not None else real_pictures()
    rng = np.random.default_rng(seed)
    pictures = set_pictures(sources, max_side=max_side, split_min_side=split_min_side)
    n_distractors = int(round(distractor_fraction * len(pictures)))
    distractor = set(rng.choice(len(pictures), n_distractors, replace=False).tolist())
    ctx = EditContext(
        templates=make_templates(rng, n_meme_templates, n_screenshot_templates),
        backgrounds=[s.image for s in sources if s.name in BACKGROUND_SOURCES],
    )
    if not ctx.backgrounds:
        raise ValueError(f"sources must include a background picture {BACKGROUND_SOURCES}")

    rows: list[dict] = []
    images: list[Image.Image] = []

    def add(image, picture_id, kind, names=(), params=(), tier=None, lookalike_of=None):
        rows.append(
            {
                "picture_id": picture_id,
                "kind": kind,
                "edit": "+".join(names) or None,
                "params": json.dumps(list(params)) if names else None,
                "tier": tier,
                "lookalike_of": lookalike_of,
            }
        )
        images.append(image)

    framed: dict[int, list[int]] = {}  # template -> rows of copies framed by it
    for index, picture in enumerate(pictures):
        image = Image.fromarray(picture.image)
        add(image, picture.picture_id, "distractor" if index in distractor else "original")
        if index in distractor:
            continue
        for c in range(n_copies_per_picture):
            copy_rng = np.random.default_rng([seed, index, c])
            tier = TIERS[c % len(TIERS)]
            copy, names, params = make_copy(image, tier, copy_rng, ctx)
            if names[-1] in ("meme_frame", "screenshot_frame"):
                framed.setdefault(params[-1]["template"], []).append(len(rows))
            add(copy, picture.picture_id, "copy", names, params, tier)
    # Look-alikes: other pictures in a template a copy already used (the frame is shared).
    for template in sorted(framed):
        look_rng = np.random.default_rng([seed, 1_000_003, template])
        inside = {rows[r]["picture_id"] for r in framed[template]}
        others = [k for k, p in enumerate(pictures) if p.picture_id not in inside]
        chosen = look_rng.choice(
            len(others), min(lookalikes_per_template, len(others)), replace=False
        )
        for k, pick in enumerate(chosen.tolist()):
            picture = pictures[others[pick]]
            imitated = framed[template][k % len(framed[template])]
            frame = ctx.templates[template]
            image = frame.render(Image.fromarray(picture.image))
            name = "meme_frame" if frame.style == "meme" else "screenshot_frame"
            add(
                image,
                picture.picture_id,
                "lookalike",
                [name],
                [{"template": template}],
                "medium",
                imitated,
            )

    keys = _keys(rng, len(rows))
    for row, key in zip(rows, keys):
        row["key"] = key
        row["file"] = f"images/{key}.jpg"
    for row in rows:
        if row["lookalike_of"] is not None:
            row["lookalike_of"] = rows[row["lookalike_of"]]["key"]
    for row, image in zip(rows, images):
        image.save(root / row["file"], format="JPEG", quality=SAVE_QUALITY)
        row["width"], row["height"] = image.size
    order = np.argsort([row["key"] for row in rows])
    ground_truth = pa.Table.from_pylist([rows[i] for i in order], schema=GROUND_TRUTH_SCHEMA)
    picture_table = pa.Table.from_pylist(
        [
            {
                "picture_id": p.picture_id,
                "role": "distractor" if k in distractor else "original",
                "source_name": p.source.name,
                "part": p.part,
                "sibling": p.sibling,
                "source": p.source.source,
                "licence": p.source.licence,
                "statement": p.source.statement,
                "width": p.image.shape[1],
                "height": p.image.shape[0],
            }
            for k, p in enumerate(pictures)
        ],
        schema=PICTURE_SCHEMA,
    )
    pq.write_table(picture_table, root / "pictures.parquet")
    pq.write_table(ground_truth, root / "ground_truth.parquet")
    return RealCopySet(root, ground_truth, picture_table)


# --- ground-truth pairs --------------------------------------------------------------------


def copy_pairs(ground_truth: pa.Table) -> set[tuple[str, str]]:
    """Every unordered key pair ``(a < b)`` of one picture: the pairs a dedup should merge."""
    groups: dict[str, list[str]] = {}
    for key, picture in zip(
        ground_truth.column("key").to_pylist(), ground_truth.column("picture_id").to_pylist()
    ):
        groups.setdefault(picture, []).append(key)
    return {tuple(sorted(p)) for keys in groups.values() for p in combinations(keys, 2)}


def lookalike_pairs(ground_truth: pa.Table, pictures: pa.Table) -> set[tuple[str, str]]:
    """Pairs of different pictures built to look alike: each look-alike with the framed copy it
    imitates, and the unedited images of sibling halves."""
    pairs = set()
    for row in ground_truth.to_pylist():
        if row["lookalike_of"] is not None:
            pairs.add(tuple(sorted((row["key"], row["lookalike_of"]))))
    unedited = {
        row["picture_id"]: row["key"]
        for row in ground_truth.to_pylist()
        if row["kind"] in ("original", "distractor")
    }
    for row in pictures.to_pylist():
        if row["sibling"] is not None:
            pairs.add(tuple(sorted((unedited[row["picture_id"]], unedited[row["sibling"]]))))
    return pairs


def pair_labels(
    keys: Sequence[str], i: np.ndarray, j: np.ndarray, picture_of: Callable[[str], str]
) -> np.ndarray:
    """True where ``keys[i]`` and ``keys[j]`` show the same picture."""
    return np.fromiter(
        (picture_of(keys[a]) == picture_of(keys[b]) for a, b in zip(i, j)), bool, len(i)
    )
