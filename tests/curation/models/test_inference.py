"""Batch inference: same embeddings as a plain forward, input order kept, failures reported."""

import io
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from curation.download.blobs import inline_bytes, read_source_bytes
from curation.imaging import decode_rgb
from curation.models.embedder import Embedder
from curation.models.inference import BatchEmbedder, InferenceOptions
from curation.models.preprocess import Preprocessing, image_to_uint8, normalize_batch
from curation.models.sscd import SSCDModel


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


def reference(embedder: Embedder, data: bytes, size: int | None = None) -> torch.Tensor:
    prep = embedder.preprocessing
    if size is not None:
        prep = Preprocessing(size, prep.resize)
    pixels = torch.from_numpy(image_to_uint8(decode_rgb(data), prep).copy())[None]
    with torch.no_grad():
        return embedder.model(normalize_batch(pixels, prep, channels_last=False))[0]


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
        np.testing.assert_allclose(result.embeddings, expected, atol=1e-4)
    assert runner.embed([]).embeddings.shape == (0, 16)
    runner.close()


def test_unpicklable_loaders_are_refused_up_front():
    options = InferenceOptions(device="cpu", num_workers=1, backend="process")
    runner = BatchEmbedder(make_embedder(), options)
    with pytest.raises(TypeError, match="picklable"):
        runner.embed([lambda: b""])
    runner.close()


def test_short_side_batches_mixed_shapes():
    images = [jpeg(0, (40, 30)), jpeg(1, (30, 40)), jpeg(2, (40, 30))]
    embedder = make_embedder(resize="short_side")
    runner = BatchEmbedder(embedder, InferenceOptions(device="cpu", batch_size=4, num_workers=2))
    result = runner.embed(loaders_of(images))
    expected = torch.stack([reference(embedder, d) for d in images]).numpy()
    np.testing.assert_allclose(result.embeddings, expected, atol=1e-4)


def test_multi_scale_is_the_normalised_mean_of_single_scales():
    data = jpeg(3, (64, 64))
    embedder = make_embedder(scales=(32, 48))
    runner = BatchEmbedder(embedder, InferenceOptions(device="cpu", num_workers=0))
    out = runner.embed(loaders_of([data])).embeddings[0]
    assert np.isclose(np.linalg.norm(out), 1.0, atol=1e-5)
    single = [reference(make_embedder(), data, size) for size in (32, 48)]
    # the 32 px view is made on the device from the 48 px one: close to, not equal to, a 32 px decode
    expected = torch.nn.functional.normalize(sum(single), dim=0).numpy()
    assert float(out @ expected) > 0.99


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
