"""Shared fixtures: small sample trees, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from preprocessing.sample_data import SampleReport, SampleSpec, generate

SMALL = SampleSpec(classes=4, train_per_class=6, val_per_class=3, quirks=1, seed=7)


@pytest.fixture(scope="session")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleReport]:
    """A 4-class tree with one of each quirk: (root, report)."""
    root = tmp_path_factory.mktemp("sample") / "imagenet"
    return root, generate(root, SMALL)
