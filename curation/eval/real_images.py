"""Real pictures that installed packages ship, with their source and licence: material for a
copy-detection benchmark that needs no download (issue 11).

A threshold or descriptor tuned on the procedural synthetic web does not transfer to photographs,
drawings and scans, so quality must also be measured on real pictures. Nothing may be fetched at run
time, so the pictures are the sample files two packages put in their wheels:

* scikit-image (``skimage/data/``): only the files the wheel itself contains, read from the package
  folder (never ``skimage.data.<name>()``, which may download through pooch). Each licence is the
  statement of the matching ``skimage.data`` function's docstring; files whose docstring states no
  licence (moon, page, logo, colour wheel, phantom, chessboards, the stereo pair) are left out.
* scikit-learn (``sklearn/datasets/images/``): ``china.jpg`` and ``flower.jpg``, licensed as the
  ``README.txt`` next to them says (Creative Commons Attribution 2.0).

matplotlib's ``mpl-data/sample_data`` (grace_hopper.jpg and two graphics) was considered and left
out: a large dependency for three images whose licence the package does not state. Pillow and
OpenCV ship no pictures in their wheels.

:data:`CATALOGUE` is the table of every picture used: name, package, file, short licence, and the
package's own wording.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from curation.config import ConfigError

SKIMAGE = "scikit-image"
SKLEARN = "scikit-learn"
_MODULE = {SKIMAGE: "skimage", SKLEARN: "sklearn"}
_FOLDER = {SKIMAGE: "data", SKLEARN: "datasets/images"}
_STATED_IN = {
    SKIMAGE: "docstring of skimage.data.{function}",
    SKLEARN: "sklearn/datasets/images/README.txt",
}


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    package: str  # the distribution name on the package index
    file: str  # inside the package's sample folder
    licence: str  # short form: public-domain, CC0-1.0, CC-BY-2.0, no-known-restrictions
    statement: str  # the package's own words
    function: str = ""  # skimage.data loader whose docstring carries the statement
    description: str = ""


CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        "astronaut",
        SKIMAGE,
        "astronaut.png",
        "public-domain",
        "No known copyright restrictions, released into the public domain.",
        "astronaut",
        "photograph, colour; source: NASA Great Images database",
    ),
    CatalogueEntry(
        "brick",
        SKIMAGE,
        "brick.png",
        "CC0-1.0",
        "licensed under the Creative Commons CC0 License",
        "brick",
        "texture photograph, grey; source: CC0Textures",
    ),
    CatalogueEntry(
        "camera",
        SKIMAGE,
        "camera.png",
        "CC0-1.0",
        "No copyright restrictions. CC0 by the photographer (Lav Varshney).",
        "camera",
        "photograph, grey",
    ),
    CatalogueEntry(
        "cell",
        SKIMAGE,
        "cell.png",
        "CC0-1.0",
        "This image is CC0, dedicated to the public domain.",
        "cell",
        "microscopy, grey",
    ),
    CatalogueEntry(
        "chelsea",
        SKIMAGE,
        "chelsea.png",
        "CC0-1.0",
        "No copyright restrictions. CC0 by the photographer (Stefan van der Walt).",
        "chelsea",
        "photograph, colour",
    ),
    CatalogueEntry(
        "clock",
        SKIMAGE,
        "clock_motion.png",
        "public-domain",
        "Released into the public domain by the photographer (Stefan van der Walt).",
        "clock",
        "photograph, grey",
    ),
    CatalogueEntry(
        "coffee",
        SKIMAGE,
        "coffee.png",
        "CC0-1.0",
        "No copyright restrictions. CC0 by the photographer (Rachel Michetti).",
        "coffee",
        "photograph, colour",
    ),
    CatalogueEntry(
        "coins",
        SKIMAGE,
        "coins.png",
        "no-known-restrictions",
        "No known copyright restrictions.",
        "coins",
        "photograph, grey; source: Brooklyn Museum Collection",
    ),
    CatalogueEntry(
        "grass",
        SKIMAGE,
        "grass.png",
        "CC0-1.0",
        "licensed under the Creative Commons CC0 License",
        "grass",
        "texture photograph, grey; source: DeviantArt, linolafett",
    ),
    CatalogueEntry(
        "gravel",
        SKIMAGE,
        "gravel.png",
        "CC0-1.0",
        "licensed under the Creative Commons CC0 License",
        "gravel",
        "texture photograph, grey; source: CC0Textures",
    ),
    CatalogueEntry(
        "horse",
        SKIMAGE,
        "horse.png",
        "CC0-1.0",
        "No copyright restrictions. CC0 given by owner (Andreas Preuss (marauder)).",
        "horse",
        "clip-art silhouette",
    ),
    CatalogueEntry(
        "hubble_deep_field",
        SKIMAGE,
        "hubble_deep_field.jpg",
        "public-domain",
        "The image was captured by NASA and may be freely used in the public domain.",
        "hubble_deep_field",
        "astronomy photograph, colour",
    ),
    CatalogueEntry(
        "immunohistochemistry",
        SKIMAGE,
        "ihc.png",
        "no-known-restrictions",
        "No known copyright restrictions.",
        "immunohistochemistry",
        "microscopy, colour; source: Center for Microscopy And Molecular Imaging",
    ),
    CatalogueEntry(
        "microaneurysms",
        SKIMAGE,
        "microaneurysms.png",
        "CC0-1.0",
        "No copyright restrictions. CC0 given by owner (Andreas Maier).",
        "microaneurysms",
        "retinal scan detail, grey, 102 px",
    ),
    CatalogueEntry(
        "retina",
        SKIMAGE,
        "retina.jpg",
        "CC0-1.0",
        "This file is made available under the Creative Commons CC0 1.0 Universal Public "
        "Domain Dedication.",
        "retina",
        "fundus photograph, colour",
    ),
    CatalogueEntry(
        "rocket",
        SKIMAGE,
        "rocket.jpg",
        "public-domain",
        "The image was captured by SpaceX and released in the public domain.",
        "rocket",
        "photograph, colour",
    ),
    CatalogueEntry(
        "text",
        SKIMAGE,
        "text.png",
        "public-domain",
        "No known copyright restrictions, released into the public domain.",
        "text",
        "photograph of painted text, grey; source: Wikipedia, Corner.png",
    ),
    CatalogueEntry(
        "china",
        SKLEARN,
        "china.jpg",
        "CC-BY-2.0",
        "Released under a creative commons license. [https://creativecommons.org/licenses/by/2.0/] "
        "Attribution: Some rights reserved by danielbuechele",
        description="photograph, colour",
    ),
    CatalogueEntry(
        "flower",
        SKLEARN,
        "flower.jpg",
        "CC-BY-2.0",
        "Released under a creative commons license. [https://creativecommons.org/licenses/by/2.0/] "
        "Attribution: Some rights reserved by danielbuechele (source page: "
        "flickr.com/photos/vultilion/6056698931)",
        description="photograph, colour",
    ),
)


class RealImagesUnavailable(ConfigError):
    """A package that ships the pictures is missing, or its version lacks a file."""


@dataclass(frozen=True)
class RealPicture:
    name: str
    image: np.ndarray  # (height, width, 3) uint8 RGB
    licence: str
    source: str  # "package:path inside the package"
    statement: str
    stated_in: str  # where the package states the licence


def package_folder(package: str) -> Path:
    """The installed folder of ``package``'s sample pictures (imports nothing)."""
    spec = importlib.util.find_spec(_MODULE[package])
    if spec is None or not spec.submodule_search_locations:
        raise RealImagesUnavailable(
            f"the real-image benchmark needs {package}, which ships its sample pictures: "
            f"pip install {package} (or pip install -e '.[dev]')"
        )
    return Path(next(iter(spec.submodule_search_locations))) / _FOLDER[package]


def to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)  # transparent drawings on white paper
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def real_pictures(names: tuple[str, ...] | None = None) -> list[RealPicture]:
    """The pictures of :data:`CATALOGUE` (or those named), in catalogue order, decoded to RGB."""
    entries = CATALOGUE if names is None else tuple(e for e in CATALOGUE if e.name in names)
    unknown = set(names or ()) - {e.name for e in entries}
    if unknown:
        raise ValueError(f"no real pictures named {sorted(unknown)}")
    pictures = []
    for entry in entries:
        path = package_folder(entry.package) / entry.file
        if not path.is_file():
            raise RealImagesUnavailable(
                f"{entry.package} is installed but has no {entry.file} (looked in "
                f"{path.parent}); install a version that ships it: pip install -U {entry.package}"
            )
        with Image.open(path) as image:
            pixels = to_rgb_array(image)
        pictures.append(
            RealPicture(
                name=entry.name,
                image=pixels,
                licence=entry.licence,
                source=f"{entry.package}:{_MODULE[entry.package]}/{_FOLDER[entry.package]}/"
                f"{entry.file}",
                statement=entry.statement,
                stated_in=_STATED_IN[entry.package].format(function=entry.function),
            )
        )
    return pictures
