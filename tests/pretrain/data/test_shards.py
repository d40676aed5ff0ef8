import numpy as np
import pytest

from pretrain.data.shards import (
    ImageFolderCatalog,
    ParquetBytesCatalog,
    ShardFormatError,
    ShardStream,
    StreamPosition,
    TarIndexCatalog,
    make_loader,
    open_catalog,
    write_parquet_shards,
    write_tar_shards,
)

N_SAMPLES = 24


def _samples(n=N_SAMPLES):
    # Each image's pixels encode its number, so decoding can be checked against the key.
    return [(f"img{i:03d}", np.full((6, 5, 3), i, dtype=np.uint8)) for i in range(n)]


def keys_and_pixels(images, keys, seed):
    return [(key, int(np.asarray(image)[0, 0, 0])) for key, image in zip(keys, images)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    samples = _samples()
    index = write_tar_shards(samples, str(root / "tars"), samples_per_shard=7)
    write_parquet_shards(samples, str(root / "parquet"), samples_per_shard=10, row_group_size=4)
    folder = root / "images" / "sub"
    folder.mkdir(parents=True)
    from PIL import Image

    for key, image in samples:
        Image.fromarray(image).save(folder / f"{key}.png")
    return {"tars": index, "parquet": str(root / "parquet"), "folder": str(root / "images")}


@pytest.mark.parametrize("kind", ["tars", "parquet", "folder"])
def test_each_format_reads_every_sample_with_its_own_bytes(sources, kind):
    catalog = open_catalog(sources[kind])
    expected_type = {"tars": TarIndexCatalog, "parquet": ParquetBytesCatalog}
    assert isinstance(catalog, expected_type.get(kind, ImageFolderCatalog))
    assert len(catalog) == N_SAMPLES
    stream = ShardStream(catalog, 4, keys_and_pixels, max_batches=N_SAMPLES // 4)
    seen = [item for batch in stream for item in batch]
    if kind == "folder":  # keys are paths relative to the folder
        seen = [(key.removeprefix("sub/").removesuffix(".png"), pixel) for key, pixel in seen]
    assert sorted(key for key, _ in seen) == [f"img{i:03d}" for i in range(N_SAMPLES)]
    for key, pixel in seen:
        assert key == f"img{pixel:03d}"


def _rank_keys(source, rank, world_size, workers, batches, position=None, seed=3):
    stream = ShardStream(
        open_catalog(source),
        batch_size=3,
        make_batch=keys_and_pixels,
        rank=rank,
        world_size=world_size,
        seed=seed,
        position=position,
        max_batches=batches,
    )
    return [[key for key, _ in batch] for batch in make_loader(stream, num_workers=workers)]


def test_two_ranks_two_workers_cover_each_epoch_disjointly(sources):
    # 24 samples, 2 ranks x batch 3: 4 batches per rank per epoch; run two epochs.
    per_rank = [_rank_keys(sources["tars"], r, 2, workers=2, batches=8) for r in range(2)]
    for epoch in range(2):
        epoch_keys = [k for rank in per_rank for b in rank[4 * epoch : 4 * epoch + 4] for k in b]
        assert len(epoch_keys) == N_SAMPLES
        assert len(set(epoch_keys)) == N_SAMPLES, "ranks or workers overlap"
    first = [k for b in per_rank[0][:4] for k in b]
    second = [k for b in per_rank[0][4:] for k in b]
    assert first != second, "each epoch must be reshuffled"


def test_workers_do_not_change_the_stream(sources):
    alone = _rank_keys(sources["parquet"], 1, 2, workers=0, batches=6)
    assert _rank_keys(sources["parquet"], 1, 2, workers=2, batches=6) == alone


def test_order_is_a_function_of_seed_and_not_of_the_format(sources):
    tars = _rank_keys(sources["tars"], 0, 1, workers=0, batches=4, seed=5)
    assert _rank_keys(sources["parquet"], 0, 1, workers=0, batches=4, seed=5) == tars
    assert _rank_keys(sources["tars"], 0, 1, workers=0, batches=4, seed=6) != tars


@pytest.mark.parametrize("resume_at", [1, 3, 5])
def test_resume_at_a_position_continues_with_the_next_samples(sources, resume_at):
    full = [_rank_keys(sources["tars"], r, 2, workers=2, batches=7) for r in range(2)]
    position = StreamPosition().advanced(resume_at, batch_size=3, world_size=2)
    position = StreamPosition.from_state_dict(position.state_dict())
    resumed = [
        _rank_keys(sources["tars"], r, 2, workers=2, batches=7 - resume_at, position=position)
        for r in range(2)
    ]
    for rank in range(2):
        assert resumed[rank] == full[rank][resume_at:]


def test_resume_with_another_world_size_loses_and_repeats_nothing(sources):
    two_ranks = [_rank_keys(sources["tars"], r, 2, workers=0, batches=2) for r in range(2)]
    position = StreamPosition().advanced(2, batch_size=3, world_size=2)  # 12 samples seen
    one_rank = _rank_keys(sources["tars"], 0, 1, workers=0, batches=4, position=position)
    keys = [k for rank in two_ranks for b in rank for k in b] + [k for b in one_rank for k in b]
    assert sorted(keys) == [f"img{i:03d}" for i in range(N_SAMPLES)]


def test_unreadable_sources_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        open_catalog(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardFormatError, match="no shard index"):
        open_catalog(tmp_path / "empty")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), tmp_path / "odd.parquet")
    with pytest.raises(ShardFormatError, match="neither"):
        open_catalog(tmp_path / "odd.parquet")
