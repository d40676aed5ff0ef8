"""Named, versioned Arrow schemas for every stage boundary (see ARCHITECTURE.md, "Data contracts").

Each schema carries its name and version in its metadata (``lvd.schema``, ``lvd.version``) so files
on disk say what they hold. Bump the version when a field changes meaning or type.
"""

from __future__ import annotations

import pyarrow as pa

STATUS_OK = "ok"


def _named(name: str, version: int, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={"lvd.schema": name, "lvd.version": str(version)})


def schema_name(schema: pa.Schema) -> str:
    """The name a schema carries in its metadata ("" if none)."""
    return (schema.metadata or {}).get(b"lvd.schema", b"").decode()


def schema_label(schema: pa.Schema) -> str:
    """``name vN``, for messages."""
    version = (schema.metadata or {}).get(b"lvd.version", b"?").decode()
    return f"{schema_name(schema) or '<unnamed>'} v{version}"


# A user's URL list; free-form extra columns are allowed and carried along (validate(allow_extra)).
URL_LIST_SCHEMA = _named(
    "url_list",
    1,
    [
        pa.field("url", pa.string(), nullable=False),
        pa.field("caption", pa.string()),
    ],
)

# One row per URL after download (img2dataset's per-sample metadata, normalised).
DOWNLOADED_SAMPLE_SCHEMA = _named(
    "downloaded_sample",
    1,
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("url", pa.string(), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_message", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        pa.field("source_file", pa.string()),
        pa.field("source_member", pa.string()),
    ],
)

# Encoded image bytes with where they came from; the input of decode/ingest.
ENCODED_IMAGE_SCHEMA = _named(
    "encoded_image",
    1,
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("image", pa.binary()),
        pa.field("source_file", pa.string()),
        pa.field("source_offset", pa.int64()),
        pa.field("source_size", pa.int64()),
    ],
)

# A validated image: what it is (hash, decoded size) and where its bytes live (file, offset, size).
IMAGE_RECORD_SCHEMA = _named(
    "image_record",
    1,
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_message", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("source_offset", pa.int64()),
        pa.field("source_size", pa.int64()),
    ],
)


# A 64-bit perceptual hash (sign bits of low-frequency DCT coefficients) per image.
IMAGE_HASH_SCHEMA = _named(
    "image_hash",
    1,
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("phash", pa.int64(), nullable=False),  # the 64 bits, as a two's-complement int64
    ],
)

# Exact (sha256) or near-exact (perceptual hash) dedup: every image, kept or the key it duplicates.
HASH_DEDUP_SCHEMA = _named(
    "hash_dedup",
    1,
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("keep", pa.bool_(), nullable=False),
        pa.field("duplicate_of", pa.string()),  # the kept key of its group; null when kept
        pa.field("reason", pa.string(), nullable=False),  # kept | exact_duplicate | near_duplicate
        pa.field("hamming_distance", pa.int32()),  # to duplicate_of (0 for exact); null when kept
    ],
)
DEDUP_REASON_KEPT = "kept"


def embedding_schema(dim: int) -> pa.Schema:
    """Embeddings as fixed-size float32 lists: ``.flatten().to_numpy().reshape(n, dim)`` is
    zero-copy over the ``ok`` rows. One row per input image: a failed image keeps its key with a
    null embedding and its ``status`` / ``error_message`` (version 2; version 1 had no status and
    only the images that worked)."""
    if dim <= 0:
        raise ValueError(f"embedding dimension must be positive, got {dim}")
    return _named(
        "embedding",
        2,
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim)),
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            pa.field("error_message", pa.string()),
        ],
    )


# kNN-graph edges above the similarity threshold (src < dst by key order, each pair once).
DEDUP_EDGE_SCHEMA = _named(
    "dedup_edge",
    1,
    [
        pa.field("src_key", pa.string(), nullable=False),
        pa.field("dst_key", pa.string(), nullable=False),
        pa.field("similarity", pa.float32(), nullable=False),
    ],
)

# Pairs the copy dedup's search found over a lowered threshold (dedup.verify): the cosine and the
# edge score (the cosine, or the density-calibrated score), to split sure pairs from pairs to check.
DEDUP_CANDIDATE_SCHEMA = _named(
    "dedup_candidate",
    1,
    [
        pa.field("src_key", pa.string(), nullable=False),
        pa.field("dst_key", pa.string(), nullable=False),
        pa.field("similarity", pa.float32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ],
)

# A candidate copy pair checked with pixels (dedup.verify): its search scores, where each image's
# bytes are, and how well one image is a rescaled window of the other (curation.window_match; null
# where an image could not be read, with the reason in status / error_message).
PAIR_CHECK_SCHEMA = _named(
    "pair_check",
    1,
    [
        pa.field("src_key", pa.string(), nullable=False),
        pa.field("dst_key", pa.string(), nullable=False),
        pa.field("similarity", pa.float32(), nullable=False),  # the cosine searched
        pa.field("score", pa.float32(), nullable=False),  # the edge score (cosine or calibrated)
        pa.field("src_file", pa.string()),
        pa.field("src_offset", pa.int64()),
        pa.field("src_size", pa.int64()),
        pa.field("dst_file", pa.string()),
        pa.field("dst_offset", pa.int64()),
        pa.field("dst_size", pa.int64()),
        pa.field("window_score", pa.float32()),  # null on input and where unreadable
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_message", pa.string()),
    ],
)

# Connected components: every image, its component and whether it survives.
DEDUP_COMPONENT_SCHEMA = _named(
    "dedup_component",
    1,
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("component_id", pa.int64(), nullable=False),
        pa.field("representative_key", pa.string(), nullable=False),
        pa.field("keep", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # kept | duplicate | eval_contaminated
    ],
)

CLUSTER_ASSIGNMENT_SCHEMA = _named(
    "cluster_assignment",
    1,
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("cluster_id", pa.int64(), nullable=False),
        pa.field("distance", pa.float32(), nullable=False),  # squared L2 to the centroid
    ],
)

# One row per selected pool image per seed it was selected for, with provenance.
RETRIEVAL_SELECTION_SCHEMA = _named(
    "retrieval_selection",
    1,
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("seed_dataset", pa.string(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),  # as_is | sample | cluster
        pa.field("seed_key", pa.string()),
        pa.field("rank", pa.int32()),
        pa.field("similarity", pa.float32()),
        pa.field("cluster_id", pa.int64()),
    ],
)

# What the shard writer reads: one row per output sample (each key once), the IMAGE_RECORD fields
# that locate its bytes (``source_file`` run-relative, or the bytes inline in ``image`` for seed
# images packed from a folder) and the provenance of the selection it came from (the first by seed
# dataset, mode and rank when several seeds selected it; RETRIEVAL_SELECTION holds them all).
SHARD_SOURCE_SCHEMA = _named(
    "shard_source",
    1,
    [
        *IMAGE_RECORD_SCHEMA,
        pa.field("image", pa.binary()),
        pa.field("seed_dataset", pa.string(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),  # as_is | sample | cluster
        pa.field("seed_key", pa.string()),
        pa.field("rank", pa.int32()),
        pa.field("similarity", pa.float32()),
        pa.field("cluster_id", pa.int64()),
    ],
)

# An LVD sample as a Parquet shard holds it (``curation/stages/shard.py``): the encoded image as
# written (re-encoded as JPEG when its long side exceeded the maximum), its file extension (from the
# real format) and sha256, its size as displayed, where it came from (URL; the run-relative file,
# offset, size and sha256 of the source bytes) and the seed provenance of its selection.
_LVD_SAMPLE_FIELDS = [
    pa.field("key", pa.string(), nullable=False),
    pa.field("image", pa.binary(), nullable=False),
    pa.field("extension", pa.string(), nullable=False),  # jpg | png | webp | gif | ...
    pa.field("sha256", pa.string(), nullable=False),  # of ``image``, the bytes written
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("url", pa.string()),
    pa.field("seed_dataset", pa.string(), nullable=False),
    pa.field("mode", pa.string(), nullable=False),  # as_is | sample | cluster
    pa.field("seed_key", pa.string()),
    pa.field("rank", pa.int32()),
    pa.field("similarity", pa.float32()),
    pa.field("cluster_id", pa.int64()),
    pa.field("source_sha256", pa.string()),  # of the source bytes (differs once re-encoded)
    pa.field("source_file", pa.string()),
    pa.field("source_offset", pa.int64()),
    pa.field("source_size", pa.int64()),
]
LVD_SAMPLE_SCHEMA = _named("lvd_sample", 1, _LVD_SAMPLE_FIELDS)

# The shard stage's output: one row per planned sample, the LVD sample ready to pack, or (``status``
# other than ok, no image) why it could not be made; the packer keeps the ok rows and counts the rest.
PREPARED_SAMPLE_SCHEMA = _named(
    "prepared_sample",
    1,
    [
        *(
            f.with_nullable(True) if f.name in ("image", "extension", "sha256") else f
            for f in _LVD_SAMPLE_FIELDS
        ),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_message", pa.string()),
    ],
)

# The Parquet index beside the LVD shards: where each sample is, and its lineage from URL to shard.
SHARD_INDEX_SCHEMA = _named(
    "shard_index",
    1,
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("member", pa.string(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("seed_dataset", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("seed_key", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ],
)

# Engines report one row per processed shard (internal to curation.engines).
# ``row_counts_json``: the shard's counters as a JSON object (rows_in, rows_out, status_<s> ...);
# version 1 called it ``counters_json``.
SHARD_RESULT_SCHEMA = _named(
    "shard_result",
    2,
    [
        pa.field("shard", pa.string(), nullable=False),
        pa.field("output", pa.string(), nullable=False),
        pa.field("rows_in", pa.int64(), nullable=False),
        pa.field("rows_out", pa.int64(), nullable=False),
        pa.field("seconds", pa.float64(), nullable=False),
        pa.field("row_counts_json", pa.string(), nullable=False),
    ],
)

# The safety stages' outputs: IMAGE_RECORD plus their decisions (stages that read IMAGE_RECORD read
# these files as they are).
STATUS_NSFW = "nsfw"
NSFW_RECORD_SCHEMA = _named(
    "nsfw_record",
    1,
    [
        *IMAGE_RECORD_SCHEMA,
        pa.field("nsfw_score", pa.float32()),  # the top class's score; null when not scored
        pa.field("nsfw_class", pa.string()),  # the top class among the grouped classes
    ],
)
FACE_RECORD_SCHEMA = _named(
    "face_record",
    1,
    [
        *IMAGE_RECORD_SCHEMA,
        pa.field("face_count", pa.int32()),  # faces found (and blurred); null when not looked at
        pa.field("face_boxes", pa.list_(pa.list_(pa.int32(), 4))),  # [left, top, right, bottom]
    ],
)

ALL_SCHEMAS = {
    schema_name(s): s
    for s in (
        URL_LIST_SCHEMA,
        DOWNLOADED_SAMPLE_SCHEMA,
        ENCODED_IMAGE_SCHEMA,
        IMAGE_RECORD_SCHEMA,
        NSFW_RECORD_SCHEMA,
        FACE_RECORD_SCHEMA,
        IMAGE_HASH_SCHEMA,
        HASH_DEDUP_SCHEMA,
        DEDUP_EDGE_SCHEMA,
        DEDUP_CANDIDATE_SCHEMA,
        PAIR_CHECK_SCHEMA,
        DEDUP_COMPONENT_SCHEMA,
        CLUSTER_ASSIGNMENT_SCHEMA,
        RETRIEVAL_SELECTION_SCHEMA,
        SHARD_SOURCE_SCHEMA,
        PREPARED_SAMPLE_SCHEMA,
        LVD_SAMPLE_SCHEMA,
        SHARD_INDEX_SCHEMA,
        SHARD_RESULT_SCHEMA,
    )
}
