"""Helpers of the download job (:mod:`curation.jobs.download`), one concern per module:

- ``config``: :class:`DownloadConfig` and the download folder layout;
- ``url_lists``: reading URL lists (parquet, csv, tsv, jsonl, gzipped or not);
- ``hosts``: host round-robin ordering;
- ``network_guard``: the network policy (private addresses and non-http(s) schemes refused), checked
  at plan time and again in the download workers at connection time (redirects, response sizes);
- ``plan``: the frozen URL plan (shards, keys, resume signature);
- ``img2dataset_job``: running img2dataset on a plan; ``guarded_downloader``: its downloader and
  progress logger subclassed (kept apart because it imports img2dataset, which is slow);
- ``kill_points``: named points where a test makes the driver SIGKILL itself;
- ``shards``: img2dataset's raw shards to DOWNLOADED_SAMPLE and ENCODED_IMAGE parts;
- ``retry``: ``--retry-failed``, merged back under the original keys;

Reading stored bytes back and indexing tars live in :mod:`curation.readers`; safe file and member
names in :mod:`curation.safe_names`.

Resume: rerunning the same ``lvd download`` command resumes at shard level. It is refused (a
``DownloadResumeError`` naming what changed) if the URL list's content or any setting that shapes
the shards or the stored bytes changed: url_col, caption_col, keep_extra_columns,
number_sample_per_shard, host_round_robin, allow_private_networks, output_format, resize_mode,
image_size (when resizing), resize_only_if_bigger, skip_reencode, encode_format, encode_quality,
min_image_size, max_aspect_ratio, verify_sha256_col, user_agent_token,
disallowed_header_directives. Processes, threads, timeout, retries, max_shard_retry,
max_response_bytes, retry_statuses and the engine may change between runs: they decide how fast
samples come and which transient failures happen, not what a finished shard holds. (A finished
shard is never redone by a resume; use ``--retry-failed`` for its failures.)
"""
