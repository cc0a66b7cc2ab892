"""The on-disk format of a data root: shards, manifest, rejects, statistics files."""
