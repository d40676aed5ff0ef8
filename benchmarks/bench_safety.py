"""Content safety on real pictures: face detectors' recall and false positives, the NSFW
detector's false-positive rate on safe pictures, and both stages' throughput against decoding alone.

    .venv/bin/python benchmarks/bench_safety.py [--images 300] [--skip-quality]

Faces, labelled by hand (boxes below) or by construction:
* the astronaut photograph (scikit-image, public domain): one frontal face; the cameraman
  (scikit-image, CC0): one face in profile, which frontal detectors are not built to find;
* the 100 face crops of scikit-image's ``lfw_subset.npy`` (Labeled Faces in the Wild; the package
  states no licence: read from the installed wheel, measured, never redistributed), each resized to
  48 and to 100 px and pasted in the middle of a grey canvas three times its side: the face box is
  where it was pasted; its 100 non-face crops give false positives on face-sized clutter;
* pictures without people: the wheel pictures other than those two, and the wallpapers of Debian's
  mate-backgrounds and plasma-workspace-wallpapers (:mod:`curation.eval.debian_pictures`).
NSFW false positives: every wheel picture and the pictures of the four Debian art packages
(photographs, wallpapers, drawings, clip art), all safe.
Throughput: the pictures as JPEG files, ingested, then decode alone (the ingest stage), the NSFW
stage and the faces stage, each over the same records, one CPU process.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from curation.engines import get_engine
from curation.eval.debian_pictures import DEFAULT_PACKAGES, package_pictures
from curation.eval.real_images import real_pictures
from curation.models.face_blur import FaceBlurConfig
from curation.models.face_detect import box_iou, load_face_detector
from curation.readers.image_files import write_encoded_shards
from curation.rundir import RunDir
from curation.runner import run_stage
from curation.stages.base import StageSpec
from curation.stages.faces import FacesStage, FacesStageConfig
from curation.stages.ingest import IngestStage
from curation.stages.nsfw import NsfwConfig, NsfwStage

LABELLED = {"astronaut": [(178, 72, 266, 172)], "camera": [(187, 100, 263, 200)]}
DETECTORS = {
    "haar": ("haar", {}),
    "dlib_hog up0": ("dlib_hog", {"upsample": 0}),
    "dlib_hog up1 (default)": ("dlib_hog", {"upsample": 1}),
    "dlib_hog up1 t0.3": ("dlib_hog", {"upsample": 1, "threshold": 0.3}),
}


def lfw_canvases(side: int) -> tuple[list[np.ndarray], list[np.ndarray], tuple]:
    root = Path(next(iter(importlib.util.find_spec("skimage").submodule_search_locations)))
    crops = (np.clip(np.load(root / "data" / "lfw_subset.npy"), 0, 1) * 255).round()
    canvases = []
    for crop in crops.astype(np.uint8):
        face = Image.fromarray(crop).resize((side, side), Image.Resampling.BICUBIC).convert("RGB")
        canvas = Image.new("RGB", (3 * side, 3 * side), (128, 128, 128))
        canvas.paste(face, (side, side))
        canvases.append(np.asarray(canvas))
    return canvases[:100], canvases[100:], (side, side, 2 * side, 2 * side)


def face_quality(no_people: list[np.ndarray]) -> None:
    wheel = {p.name: p.image for p in real_pictures(tuple(LABELLED))}
    print(f"faces: {len(no_people)} pictures without people")
    for label, (name, options) in DETECTORS.items():
        detector = load_face_detector(name, **options)
        found = {}
        for side in (48, 100):
            faces, _, box = lfw_canvases(side)
            found[side] = sum(any(box_iou(b, box) >= 0.3 for b in detector(c)) for c in faces)
        _, clutter, _ = lfw_canvases(64)
        clutter_fp = sum(len(detector(c)) for c in clutter)
        photo_hits, photo_fp = [], 0
        for key, boxes in LABELLED.items():
            got = detector(wheel[key])
            photo_hits += [any(box_iou(b, t) >= 0.3 for b in got) for t in boxes]
            photo_fp += sum(not any(box_iou(b, t) >= 0.3 for t in boxes) for b in got)
        start = time.perf_counter()
        fp_images = sum(bool(detector(image)) for image in no_people)
        ms = 1000 * (time.perf_counter() - start) / len(no_people)
        print(
            f"  {label:24s} LFW faces found 48px {found[48]}/100, 100px {found[100]}/100; "
            f"labelled photo faces {sum(photo_hits)}/{len(photo_hits)} (+{photo_fp} false boxes); "
            f"non-face crops with a box {clutter_fp}/100; pictures without people with a box "
            f"{fp_images}/{len(no_people)}; {ms:.0f} ms per such picture"
        )


def nsfw_false_positives(pictures: list[tuple[str, np.ndarray]]) -> None:
    stage = NsfwStage(NsfwConfig(enabled=True, num_workers=0))
    stage.setup()
    import torch

    scores = []
    for i in range(0, len(pictures), 32):
        chunk = [
            np.array(Image.fromarray(image).resize((320, 320), Image.Resampling.BILINEAR))
            for _, image in pictures[i : i + 32]
        ]
        scores.append(stage.runner.forward_uint8(torch.from_numpy(np.stack(chunk))).numpy())
    scores = np.concatenate(scores)
    flagged, reasons, top, _ = stage.decide(scores)
    print(
        f"nsfw ({stage.model_id}, threshold {stage.config.default_threshold}): "
        f"{sum(flagged)}/{len(pictures)} safe pictures flagged "
        f"({100 * sum(flagged) / len(pictures):.2f}%); top grouped score: median "
        f"{np.median(top):.3f}, 99th percentile {np.percentile(top, 99):.3f}, max {top.max():.3f}"
    )
    for (name, _), bad, reason in zip(pictures, flagged, reasons):
        if bad:
            print(f"  flagged: {name}: {reason}")


def throughput(pictures: list[tuple[str, np.ndarray]], count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = []
        for i in range(count):
            name, image = pictures[i % len(pictures)]
            path = root / "jpg" / f"{i:05d}.jpg"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(image).save(path, quality=90)
            files.append(path)
        shards = write_encoded_shards(files, root / "encoded", rows_per_shard=100)
        run, engine = RunDir(root / "run"), get_engine("local", progress=False)
        rates = {}

        def timed(label, spec, inputs):
            start = time.perf_counter()
            run_stage(spec, inputs, run.stage(label), engine)
            rates[label] = count / (time.perf_counter() - start)
            return run.stage(label).outputs()

        records = timed("decode (ingest)", StageSpec(IngestStage), shards)
        timed("nsfw", StageSpec(NsfwStage, NsfwConfig(enabled=True)), records)
        blurred = str(root / "blurred")
        faces = FacesStageConfig(face_blur=FaceBlurConfig(enabled=True), blurred_dir=blurred)
        timed("faces (dlib_hog up1)", StageSpec(FacesStage, faces), records)
        haar = FacesStageConfig(
            face_blur=FaceBlurConfig(enabled=True, detector="haar"), blurred_dir=blurred
        )
        timed("faces (haar)", StageSpec(FacesStage, haar), records)
        side = np.mean([max(image.shape[:2]) for _, image in pictures])
        print(f"throughput, {count} JPEGs (mean long side {side:.0f} px), 1 process:")
        base = rates["decode (ingest)"]
        for label, rate in rates.items():
            print(f"  {label:22s} {rate:8.1f} images/s  ({rate / base:.3f} x decode alone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="JPEGs for the throughput run")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    wheel = real_pictures()
    safe = [(p.name, p.image) for p in wheel]
    no_people = [p.image for p in wheel if p.name not in LABELLED]
    for package in DEFAULT_PACKAGES:
        pictures = package_pictures(package).pictures
        safe += [(p.name, p.image) for p in pictures]
        if package in ("mate-backgrounds", "plasma-workspace-wallpapers"):
            no_people += [p.image for p in pictures]
    if not args.skip_quality:
        face_quality(no_people)
        nsfw_false_positives(safe)
    throughput(safe, args.images)


if __name__ == "__main__":
    main()
