"""One module per ``lvd`` subcommand; each exposes ``register(subparsers)`` and a thin handler.

To add a subcommand, add its module here and its name to :data:`COMMANDS` (only commands that work
are listed, so ``lvd --help`` never advertises a stub).
"""

COMMANDS = [
    "demo",
    "run",
    "synth",
    "decode",
    "download",
    "ingest",
    "embed",
    "dedup",
    "cluster",
    "retrieve",
    "shards",
    "manifest",
    "report",
    "lineage",
    "train_descriptor",
    "bench",
    "pretrain",
    "eval",
    "checkpoint",
    "serve",
]
