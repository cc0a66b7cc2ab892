"""The loader's one call into torch's private API, kept here so that a torch upgrade
that changes it breaks one small file (and `tests/test_train_data.py`'s test that an
early stop leaves no worker behind), not the loader."""

from __future__ import annotations

import torch


def stop_workers(loader: torch.utils.data.DataLoader) -> None:
    """Stop a DataLoader's persistent workers now. Deleting the iterator would stop them
    too, but only when the garbage collector gets to it; a stopped epoch must not leave
    workers reading shards (and holding shared-memory slots) meanwhile."""
    running = loader._iterator  # private: torch has no public way to stop workers
    if running is not None:
        running._shutdown_workers()
