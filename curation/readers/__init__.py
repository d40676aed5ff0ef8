"""Shared readers: where stored images and user inputs are read, by every stage, job and trainer.

- ``image_bytes``: an image's bytes from where a record says they live (inline, a tar member by
  offset, a loose file, a row of a Parquet download), and picklable loaders for decode workers;
- ``tar_index``: where each member's data lies in a tar, from its headers alone (the one tar index);
- ``image_files``: folders of loose image files, and packing them into ENCODED_IMAGE shards;
- ``input_shards``: user inputs (webdataset tars, Parquet with key + image) as ENCODED_IMAGE shards,
  and which input schema a shard holds.
"""
