"""The training and validation loaders, with the paper's augmentations, by concern:

augment     the paper's math: crop, flip, PCA lighting (`View`), `prepare_batch`
decode      a stored image into a reused array (simplejpeg, or Pillow)
batch       `Batch` and the buffer a worker fills
transport   shared-memory slots, page-locking, the copy to the device
dataset     `ShardSamples`: shards, shuffle buffer, ranks and workers
workers     `Loader`: persistent worker processes over the slots
"""
