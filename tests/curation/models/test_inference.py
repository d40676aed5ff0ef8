"""Batch inference: same embeddings as a plain forward of independently prepared pixels, input
order kept, failures reported.

Expected embeddings never go through the package's decode/resize/normalise helpers: pixels come
from Pillow and the ImageNet formula written out in :func:`reference_pixels`. The pipeline
normalises in float32, the reference in float64 (then float32 for the model): embeddings agree to
1e-5.
"""

import io
import os
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from curation.models.embedder import Embedder
from curation.models.inference import BatchEmbedder, InferenceOptions
from curation.models.preprocess import Preprocessing
from curation.models.sscd import SSCDModel
from curation.readers.image_bytes import inline_bytes, read_source_bytes


def jpeg(seed: int, size=(40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def make_embedder(resize="square", scales=()) -> Embedder:
    torch.manual_seed(0)
    model = SSCDModel("resnet18", dim=16, width=8).eval()
    size = max(scales) if scales else 32
    return Embedder(model, "tiny", 16, Preprocessing(size, resize), tuple(scales))


def reference_pixels(data: bytes, resize: str, size: int) -> np.ndarray:
    """The model input for one image, computed without the package's decode/resize/normalise
    helpers: Pillow decode, Pillow resize with the recipe's filter (bilinear; bicubic then a
    ``floor(margin / 2)`` crop for ``center_crop``), ``(x / 255 - mean) / std`` in float64.
    Returns ``[3, H, W]``."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    if resize == "square":
        pixels = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
    else:
        short_target = size if resize == "short_side" else (2 * size * 8 + 7) // 14  # size * 8/7
        short = min(width, height)
        new_w = (2 * width * short_target + short) // (2 * short)  # nearest integer
        new_h = (2 * height * short_target + short) // (2 * short)
        filter_ = Image.Resampling.BILINEAR if resize == "short_side" else Image.Resampling.BICUBIC
        pixels = np.asarray(image.resize((new_w, new_h), filter_))
        if resize == "center_crop":
            top, left = (new_h - size) // 2, (new_w - size) // 2
            pixels = pixels[top : top + size, left : left + size]
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    return ((pixels / 255.0 - mean) / std).transpose(2, 0, 1)


def reference(embedder: Embedder, data: bytes, size: int | None = None) -> torch.Tensor:
    """A direct forward of the embedder's model on :func:`reference_pixels`."""
    prep = embedder.preprocessing
    x = torch.from_numpy(reference_pixels(data, prep.resize, size or prep.size)).float()[None]
    with torch.no_grad():
        return embedder.model(x)[0]


def loaders_of(images: list[bytes]) -> list:
    return [partial(inline_bytes, d) for d in images]  # picklable: decode workers are processes


@pytest.mark.parametrize(
    ("workers", "chunk", "backend"), [(0, 16, "auto"), (2, 2, "process"), (2, 3, "thread")]
)
def test_matches_plain_forward_and_reports_failures(workers, chunk, backend, tmp_path):
    images = [jpeg(i) for i in range(7)]
    loaders = loaders_of(images)
    loaders.insert(2, partial(inline_bytes, b"not an image"))
    loaders.insert(5, partial(inline_bytes, None))
    loaders.append(partial(read_source_bytes, str(tmp_path / "gone.tar"), 0, 10))
    embedder = make_embedder()
    options = InferenceOptions(
        device="cpu", batch_size=3, num_workers=workers, chunk_size=chunk, backend=backend
    )
    runner = BatchEmbedder(embedder, options)
    expected = torch.stack([reference(embedder, d) for d in images]).numpy()
    for _ in range(2):  # persistent workers serve a second call too
        result = runner.embed(loaders)
        assert result.positions.tolist() == [0, 1, 3, 4, 6, 7, 8]
        assert [(i, s) for i, s, _ in result.failures] == [
            (2, "decode_error"),
            (5, "empty"),
            (9, "read_error"),
        ]
        np.testing.assert_allclose(result.embeddings, expected, rtol=0, atol=1e-5)
    assert runner.embed([]).embeddings.shape == (0, 16)
    runner.close()


def test_unpicklable_loaders_are_refused_up_front():
    options = InferenceOptions(device="cpu", num_workers=1, backend="process")
    runner = BatchEmbedder(make_embedder(), options)
    with pytest.raises(TypeError, match="picklable"):
        runner.embed([lambda: b""])
    runner.close()


@pytest.mark.parametrize("resize", ["square", "short_side", "center_crop"])
def test_each_resize_mode_matches_the_independent_reference(resize):
    # landscape, portrait and an odd aspect ratio (short_side: 32 x 43, 43 x 32 and 32 x 49;
    # center_crop: short side resized to 37, then a crop with an odd margin for 40 x 30)
    images = [jpeg(0, (40, 30)), jpeg(1, (30, 40)), jpeg(2, (41, 27)), jpeg(4, (40, 30))]
    embedder = make_embedder(resize=resize)
    runner = BatchEmbedder(embedder, InferenceOptions(device="cpu", batch_size=4, num_workers=2))
    result = runner.embed(loaders_of(images))
    assert result.positions.tolist() == [0, 1, 2, 3]
    expected = torch.stack([reference(embedder, d) for d in images]).numpy()
    np.testing.assert_allclose(result.embeddings, expected, rtol=0, atol=1e-5)
    runner.close()


def test_multi_scale_is_the_normalised_sum_of_single_scale_embeddings():
    data = jpeg(3, (64, 64))
    embedder = make_embedder(scales=(32, 48))
    runner = BatchEmbedder(embedder, InferenceOptions(device="cpu", num_workers=0))
    out = runner.embed(loaders_of([data])).embeddings[0]
    assert np.isclose(np.linalg.norm(out), 1.0, atol=1e-5)
    # Decoded once at the largest scale; each smaller view is that image rescaled (bilinear,
    # antialiased) after normalisation.
    x48 = torch.from_numpy(reference_pixels(data, "square", 48)).float()[None]
    x32 = torch.nn.functional.interpolate(x48, size=(32, 32), mode="bilinear", antialias=True)
    with torch.no_grad():
        total = embedder.model(x48)[0] + embedder.model(x32)[0]
    expected = (total / total.norm()).numpy()
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    # and close to (not equal to) averaging views decoded at each size
    single = [reference(make_embedder(), data, size) for size in (32, 48)]
    decoded = torch.nn.functional.normalize(sum(single), dim=0).numpy()
    assert float(out @ decoded) > 0.99


def test_bf16_autocast_on_cpu_stays_close_to_fp32():
    images = [jpeg(i) for i in range(4)]
    loaders = loaders_of(images)
    fp32 = BatchEmbedder(make_embedder(), InferenceOptions(device="cpu", num_workers=0))
    bf16 = BatchEmbedder(
        make_embedder(), InferenceOptions(device="cpu", dtype="bf16", num_workers=0)
    )
    a, b = fp32.embed(loaders).embeddings, bf16.embed(loaders).embeddings
    assert (a * b).sum(axis=1).min() > 0.98


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_in_float32_and_bf16_stays_close():
    images = [jpeg(i) for i in range(20)]
    cpu = BatchEmbedder(make_embedder(), InferenceOptions(device="cpu", num_workers=0))
    reference = cpu.embed(loaders_of(images)).embeddings
    for dtype, tolerance in (("float32", 1e-3), ("bf16", 0.02)):
        options = InferenceOptions(device="cuda", dtype=dtype, batch_size=8, num_workers=2)
        gpu = BatchEmbedder(make_embedder(), options)
        out = gpu.embed(loaders_of(images)).embeddings
        gpu.close()
        assert 1 - (out * reference).sum(axis=1).min() < tolerance, dtype


def test_decode_workers_come_from_the_machine(monkeypatch):
    """No decode-worker count is hard-coded: a thread per usable CPU on a CPU device, CPUs - 2
    processes beside a GPU (at least 2), and in a Ray worker the CPUs Ray assigned to it."""
    import types

    import torch

    from curation.models import inference

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delitem(inference.sys.modules, "ray", raising=False)
    assert inference.decode_workers(torch.device("cpu")) == 16
    assert inference.decode_workers(torch.device("cuda")) == 14
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert inference.decode_workers(torch.device("cpu")) == 2
    assert inference.decode_workers(torch.device("cuda")) == 2
    context = types.SimpleNamespace(get_assigned_resources=lambda: {"CPU": 3.0, "GPU": 1.0})
    fake_ray = types.SimpleNamespace(
        is_initialized=lambda: True, get_runtime_context=lambda: context
    )
    monkeypatch.setitem(inference.sys.modules, "ray", fake_ray)
    assert inference.usable_cpus() == 3
    assert inference.decode_workers(torch.device("cpu")) == 3

    def on_the_driver():  # what Ray answers in the process that called ray.init()
        raise AssertionError("This method is only available when the process is a worker.")

    context.get_assigned_resources = on_the_driver
    assert inference.usable_cpus() == 2  # the affinity mask


def test_the_default_options_pick_the_machines_decode_workers(monkeypatch):
    from curation.models import inference

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.delitem(inference.sys.modules, "ray", raising=False)
    runner = inference.BatchEmbedder(make_embedder(), inference.InferenceOptions(device="cpu"))
    try:
        assert runner.options.num_workers == 3
    finally:
        runner.close()
