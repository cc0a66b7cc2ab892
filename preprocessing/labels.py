"""ImageNet's label files, parsed: the class list and the flat val/'s labels.

    LOC_synset_mapping.txt      "wnid name, synonyms" per line, in class-index order
    LOC_val_solution.csv        Kaggle: ImageId,PredictionString (the wnid first)
    val.txt / val_labels.txt    "filename wnid" or "filename index" per line

(The devkit's are in devkit.py.) Used by source.py's listing.
"""

from __future__ import annotations

import csv
from pathlib import Path


def read_synsets(path: Path) -> list[tuple[str, str]]:
    """Parse LOC_synset_mapping.txt: 'wnid name, synonyms' per line."""
    classes = []
    # -sig: a byte-order mark is not part of the first wnid (it would lose class 0)
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not wnid:
            raise ValueError(f"{path}:{n}: expected 'wnid name', got {line!r}")
        classes.append((wnid, name.strip()))
    if not classes:
        raise ValueError(f"{path} is empty: it names no class")
    if len({w for w, _ in classes}) != len(classes):
        raise ValueError(f"{path}: a wnid appears twice")
    return classes


def read_val_labels(path: Path, wnids: list[str] | None) -> dict[str, str]:
    """File stem -> wnid, from a Kaggle CSV or a plain 'filename wnid|index' list."""
    labels: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a BOM is not data
        first = f.readline()
        if not first.strip():
            raise ValueError(f"{path} is empty: it labels no validation image")
        f.seek(0)
        if first.strip().startswith("ImageId"):
            for row in csv.DictReader(f):
                tokens = (row.get("PredictionString") or "").split()
                if not tokens:
                    raise ValueError(f"{path}: no label for {row.get('ImageId')!r}")
                _label(labels, Path(row["ImageId"]).stem, tokens[0], f"{path}")
            return labels
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{path}:{n}: expected 'filename wnid' or 'filename index'")
            name, label = parts
            if label.isdigit():
                if wnids is None or not 0 <= int(label) < len(wnids):
                    raise ValueError(
                        f"{path}:{n}: class index {label} with no class list to map it"
                    )
                label = wnids[int(label)]
            _label(labels, Path(name).stem, label, f"{path}:{n}")
    return labels


def _label(labels: dict[str, str], stem: str, wnid: str, where: str) -> None:
    """Record one label; the same image labelled twice with two classes is an error (the
    last line silently won before)."""
    if labels.setdefault(stem, wnid) != wnid:
        raise ValueError(
            f"{where}: {stem!r} is labelled both {labels[stem]!r} and {wnid!r}; fix the labels file"
        )
