"""What the pipeline's tasks hand each other: the shapes of their results.

Prefect persists each task's result (as JSON, readable in its UI) and passes it
to the next task as input, so the results stay plain dicts; these TypedDicts
say what each holds, in one place.
"""

from __future__ import annotations

from typing import TypedDict


class Preprocessed(TypedDict):
    """What preprocess_task returns (and Prefect persists, as JSON)."""

    counts: dict[str, int]  # inputs, written, rejected
    train_shards: list[str]  # each train shard's sha256, in order: what stats must cover
    fingerprint: str  # the source's
    changes: dict  # added/changed/deleted inputs and shards rewritten, per split
    shards_written: int


class Computed(TypedDict):
    """What stats_task returns."""

    key: str  # the train shards and scale the statistics describe
    n_images: int
    eigenvalues: list[float]


class Trained(TypedDict):
    """What train_task returns."""

    run_dir: str
    checkpoint_sha256: str  # best.pt's: what evaluate_task's cache key names
    last: dict  # the last epoch's metrics line
