"""Real pictures from Debian packages (photographs, wallpapers, drawings, clip art), each with the
licence its package's copyright file states: material for ``lvd bench copydetect`` (issue 11).

The wheel pictures of :mod:`curation.eval.real_images` are 19 files; a benchmark needs hundreds.
Debian ships art packages whose licences are recorded per package (and, in machine-readable DEP-5
copyright files, per file). A package is fetched once with ``apt-get download`` (no root install)
and unpacked with ``dpkg-deb -x`` into the cache (``$LVD_CACHE`` or ``~/.cache/lvd``, under
``debian/<package>/``); only its pictures and copyright file are kept. Both steps write to a
temporary folder that is renamed when complete, so an interrupted fetch leaves nothing half-made.

:data:`RECIPES` says, per package, which files are pictures (and which variants of one picture to
skip: the same wallpaper at several resolutions, a dark version). Files whose licence the copyright
file does not state, SVGs, and pictures under ``min_side`` pixels are left out.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from curation.eval.real_images import RealImagesUnavailable, RealPicture, to_rgb_array

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_MARKER = ".lvd-package.json"  # written last into an unpacked package folder


class DebianPicturesUnavailable(RealImagesUnavailable):
    """apt-get or dpkg-deb is missing, or a package could not be downloaded or unpacked."""


def default_cache() -> Path:
    """``$LVD_CACHE`` or ``~/.cache/lvd``."""
    return Path(os.environ.get("LVD_CACHE") or Path.home() / ".cache" / "lvd")


@dataclass(frozen=True)
class PackageRecipe:
    """Which files of a package are benchmark pictures.

    ``include``: glob patterns (``fnmatch``, relative to the unpacked root); ``exclude``: patterns
    left out; ``variant_of``: maps a path to the name of the picture it shows (files mapping to one
    name are variants: the first in path order is kept; None leaves the file out); ``limit``: at
    most this many pictures, taken round-robin over the first path component below
    ``spread_root`` in hash order (so a sample covers every category); ``spread_root`` is also
    left out of picture names; ``licence``/``statement``: for a copyright file that is not
    machine-readable, what it says for every file; ``max_side``: drawings are loaded small
    enough that the copy set never cuts them in halves (half a drawing is often blank paper)."""

    package: str
    short: str  # prefix of picture names
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    variant_of: Callable[[str], str | None] | None = None
    limit: int | None = None
    spread_root: str = ""
    licence: str | None = None
    statement: str | None = None
    max_side: int | None = None  # cap on the long side when loaded (None: the caller's)


def _plasma_variant(path: str) -> str | None:
    # usr/share/wallpapers/<Name>/contents/images/<W>x<H>.<ext>: one picture per wallpaper, the
    # first landscape size in path order; portrait sizes are crops of it
    width, _, height = path.rsplit("/", 1)[1].split(".")[0].partition("x")
    if width.isdigit() and height.isdigit() and int(width) < int(height):
        return None
    return path.split("/")[3]


def _mate_variant(path: str) -> str:
    return re.sub(r"_\d+x\d+(?=\.\w+$)", "", path)  # Elephants_3840x2160.jpg is Elephants.jpg


RECIPES: dict[str, PackageRecipe] = {
    r.package: r
    for r in (
        PackageRecipe(
            "tuxpaint-stamps-default",
            "tuxpaint",
            ("usr/share/tuxpaint/stamps/*.png",),
            spread_root="usr/share/tuxpaint/stamps/",
            # letters are glyphs, not pictures; the money folder holds coin faces and notes
            exclude=("*/symbols/alphabets/*",),
            max_side=512,
        ),
        PackageRecipe(
            "openclipart-png",
            "openclipart",
            ("usr/share/openclipart/png/*.png",),
            limit=600,
            max_side=512,
            spread_root="usr/share/openclipart/png/",
            licence="public-domain",
            statement="creative commons Public Domain Dedication: Copyright-Only Dedication (based "
            "on United States law) or Public Domain Certification",
        ),
        PackageRecipe(
            "mate-backgrounds",
            "mate",
            ("usr/share/backgrounds/mate/*.jpg", "usr/share/backgrounds/mate/*.png"),
            variant_of=_mate_variant,
            spread_root="usr/share/backgrounds/mate/",
        ),
        PackageRecipe(
            "plasma-workspace-wallpapers",
            "plasma",
            ("usr/share/wallpapers/*/contents/images/*",),  # not images_dark/, not screenshots
            variant_of=_plasma_variant,
            spread_root="usr/share/wallpapers/",
        ),
    )
}
DEFAULT_PACKAGES = tuple(RECIPES)


# --- fetching --------------------------------------------------------------------------------


def apt_download(package: str, folder: Path) -> Path:
    """``apt-get download package`` into ``folder``; the ``.deb`` written."""
    if shutil.which("apt-get") is None:
        raise DebianPicturesUnavailable(
            f"fetching {package} needs apt-get (a Debian or Ubuntu system); run the benchmark "
            "with --source packages instead"
        )
    done = subprocess.run(
        ["apt-get", "download", package], cwd=folder, capture_output=True, text=True
    )
    debs = sorted(folder.glob("*.deb"))
    if done.returncode != 0 or not debs:
        reason = (done.stderr or done.stdout).strip().splitlines()
        detail = next(
            (line for line in reason if line.startswith("E:")), reason[-1] if reason else ""
        )
        raise DebianPicturesUnavailable(
            f"apt-get download {package} failed ({detail or f'exit {done.returncode}'}); "
            "check the network and `apt-get update`, or use --source packages"
        )
    return debs[0]


def _keep(path: str, package: str) -> bool:
    return path.lower().endswith(PICTURE_SUFFIXES) or path == f"usr/share/doc/{package}/copyright"


def fetch_package(
    package: str,
    cache: Path | None = None,
    *,
    download: Callable[[str, Path], Path] = apt_download,
) -> Path:
    """The unpacked root of ``package`` in the cache, fetched and unpacked first if missing.

    Only pictures and the copyright file are kept. Idempotent: a complete folder (its marker
    written last) is returned as is; a temporary folder of an interrupted fetch is replaced."""
    base = (cache or default_cache()) / "debian"
    root = base / package
    if (root / _MARKER).is_file():
        return root
    if shutil.which("dpkg-deb") is None:
        raise DebianPicturesUnavailable(
            f"unpacking {package} needs dpkg-deb (package dpkg); run the benchmark with "
            "--source packages instead"
        )
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{package}.", dir=base) as tmp:
        tmp = Path(tmp)
        (tmp / "deb").mkdir()
        deb = download(package, tmp / "deb")
        unpacked = tmp / "root"
        done = subprocess.run(
            ["dpkg-deb", "-x", str(deb), str(unpacked)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise DebianPicturesUnavailable(
                f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()[:200]}"
            )
        fields = subprocess.run(
            ["dpkg-deb", "--showformat=${Package}\t${Version}", "--show", str(deb)],
            capture_output=True,
            text=True,
        ).stdout.strip()
        for path in sorted(unpacked.rglob("*"), reverse=True):  # files before their folders
            relative = path.relative_to(unpacked).as_posix()
            if path.is_symlink() or (path.is_file() and not _keep(relative, package)):
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        name, _, version = fields.partition("\t")
        (unpacked / _MARKER).write_text(
            json.dumps({"package": name or package, "version": version, "deb": deb.name})
        )
        if root.exists():  # a folder without its marker: an earlier run died while renaming
            shutil.rmtree(root)
        unpacked.rename(root)
    return root


def package_version(root: Path) -> str:
    return json.loads((root / _MARKER).read_text()).get("version", "")


# --- licences --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilesStanza:
    patterns: tuple[str, ...]
    licence: str
    copyright: str

    def matches(self, path: str) -> bool:
        # DEP-5 patterns are relative to the source tree; installed paths add a prefix
        return any(
            fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, f"*/{p}") for p in self.patterns
        )


def _paragraphs(text: str) -> Iterator[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields:
            yield fields


def parse_dep5(text: str) -> list[FilesStanza] | None:
    """The ``Files:`` stanzas of a machine-readable (DEP-5) copyright file; None if not DEP-5."""
    if not text.lstrip().startswith("Format:"):
        return None
    stanzas = []
    for fields in _paragraphs(text):
        if "files" in fields and "license" in fields:
            stanzas.append(
                FilesStanza(
                    tuple(fields["files"].split()),
                    fields["license"].splitlines()[0].strip(),
                    " ".join(fields.get("copyright", "").split()),
                )
            )
    return stanzas


def file_licence(stanzas: Sequence[FilesStanza], path: str) -> FilesStanza | None:
    """The last stanza matching ``path`` (DEP-5: later stanzas override earlier ones)."""
    return next((s for s in reversed(stanzas) if s.matches(path)), None)


# --- pictures --------------------------------------------------------------------------------


def _hash_order(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()


def _candidates(root: Path, recipe: PackageRecipe) -> list[str]:
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES
    )
    files = [
        f
        for f in files
        if any(fnmatch.fnmatch(f, p) for p in recipe.include)
        and not any(fnmatch.fnmatch(f, p) for p in recipe.exclude)
    ]
    if recipe.variant_of is not None:
        seen: set[str] = set()
        kept = []
        for f in files:
            name = recipe.variant_of(f)
            if name is not None and name not in seen:
                seen.add(name)
                kept.append(f)
        files = kept
    return files


def _spread(files: list[str], recipe: PackageRecipe) -> list[str]:
    """At most ``recipe.limit`` files, round-robin over categories, each category in hash order."""
    if recipe.limit is None or len(files) <= recipe.limit:
        return files
    groups: dict[str, list[str]] = {}
    for f in sorted(files, key=_hash_order):
        groups.setdefault(f.removeprefix(recipe.spread_root).split("/")[0], []).append(f)
    chosen: list[str] = []
    queues = [groups[k] for k in sorted(groups)]
    while len(chosen) < recipe.limit:
        for queue in queues:
            if queue and len(chosen) < recipe.limit:
                chosen.append(queue.pop(0))
    return sorted(chosen)


def _size_problem(path: Path, min_side: int, max_pixels: int) -> str | None:
    """Why the picture at ``path`` is left out by its header alone (no pixels decoded), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        return "too_large"
    except (OSError, ValueError):
        return "undecodable"
    if min(width, height) < min_side:
        return "too_small"
    if width * height > max_pixels:
        return "too_large"  # a poster-size drawing takes seconds to decode
    return None


def _load(path: Path, max_side: int) -> np.ndarray:
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (max_side, max_side))  # decode big JPEGs at a reduced scale
        image.load()
        if max(image.size) > max_side:
            image = image.copy()
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return to_rgb_array(image)


def picture_name(recipe: PackageRecipe, path: str) -> str:
    stem = path.rsplit(".", 1)[0]
    for prefix in (recipe.spread_root, "usr/share/"):
        stem = stem.removeprefix(prefix)
    return f"{recipe.short}:{re.sub(r'[^A-Za-z0-9._/-]+', '_', stem)}"


@dataclass
class PackagePictures:
    """A package's pictures and what was left out (for the benchmark's manifest)."""

    package: str
    version: str
    pictures: list[RealPicture] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count


def package_pictures(
    package: str,
    cache: Path | None = None,
    *,
    recipe: PackageRecipe | None = None,
    min_side: int = 64,
    max_side: int = 1024,
    max_pixels: int = 40_000_000,
    download: Callable[[str, Path], Path] = apt_download,
) -> PackagePictures:
    """The pictures of ``package`` (fetched into the cache if needed) as :class:`RealPicture`, in
    path order: RGB (transparency composited on white), the long side capped at ``max_side``.
    Pictures with a side under ``min_side`` or over ``max_pixels`` pixels are left out."""
    recipe = recipe or RECIPES.get(package)
    if recipe is None:
        raise ValueError(f"no picture recipe for package {package!r}; known: {sorted(RECIPES)}")
    root = fetch_package(package, cache, download=download)
    copyright_file = root / "usr" / "share" / "doc" / package / "copyright"
    if not copyright_file.is_file():
        raise DebianPicturesUnavailable(
            f"{package} ships no copyright file; its licence is unknown"
        )
    stanzas = parse_dep5(copyright_file.read_text(errors="replace"))
    if stanzas is None and recipe.licence is None:
        raise DebianPicturesUnavailable(
            f"{package}'s copyright file is not machine-readable and its recipe states no licence"
        )
    out = PackagePictures(package, package_version(root))

    def skip(reason: str) -> None:
        out.skipped[reason] = out.skipped.get(reason, 0) + 1

    stated_in = f"debian:{package}:usr/share/doc/{package}/copyright"
    licensed: dict[str, tuple[str, str]] = {}
    for path in _candidates(root, recipe):  # cheap checks (header, licence) before the sample
        if recipe.licence is not None:
            licensed[path] = (recipe.licence, recipe.statement or recipe.licence)
        else:
            stanza = file_licence(stanzas or [], path)
            if stanza is None:
                skip("no_licence_stated")
                continue
            licensed[path] = (
                stanza.licence,
                f"Copyright {stanza.copyright}; License: {stanza.licence}",
            )
        reason = _size_problem(root / path, min_side, max_pixels)
        if reason:
            skip(reason)
            del licensed[path]
    for path in _spread(sorted(licensed), recipe):
        try:
            pixels = _load(root / path, recipe.max_side or max_side)
        except (OSError, ValueError, Image.DecompressionBombError):
            skip("undecodable")
            continue
        licence, statement = licensed[path]
        out.pictures.append(
            RealPicture(
                name=picture_name(recipe, path),
                image=pixels,
                licence=licence,
                source=f"debian:{package}:{path}",
                statement=statement,
                stated_in=stated_in,
            )
        )
    return out
