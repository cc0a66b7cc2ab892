"""ILSVRC-2012's devkit (`ILSVRC2012_devkit_t12.tar.gz`): classes and val labels, read in place.

    data/meta.mat     `synsets`, a MATLAB struct array with the fields ILSVRC2012_ID,
                      WNID, words, gloss, num_children, children, wordnet_height and
                      num_train_images: 1,000 leaves (num_children == 0), the classes,
                      and 860 internal synsets, which are not classes
    data/ILSVRC2012_validation_ground_truth.txt
                      line i: the ILSVRC2012_ID of val image i
                      (ILSVRC2012_val_0000000i.JPEG), 1-based

The devkit's ID order is not sorted-wnid order (ID 1 is n02119789). This
project, torchvision and Kaggle's mapping file index the classes in sorted-wnid
order, so an ID is always mapped through its wnid, never used as an index
(`ID - 1` would silently disagree with all of them). Reading meta.mat needs
scipy (MAT v5; a dependency, imported only here).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
META = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
FIELDS = (
    "ILSVRC2012_ID",
    "WNID",
    "words",
    "gloss",
    "num_children",
    "children",
    "wordnet_height",
    "num_train_images",
)


@dataclass(frozen=True)
class Devkit:
    classes: list[tuple[str, str]]  # (wnid, words) of the leaves, in sorted-wnid order
    val_wnids: list[str]  # the class of val image i + 1

    def val_labels(self) -> dict[str, str]:
        """Val image stem (`ILSVRC2012_val_00000001`) -> its wnid."""
        return {f"ILSVRC2012_val_{i:08d}": w for i, w in enumerate(self.val_wnids, 1)}


def _member(tar: tarfile.TarFile, suffix: str, path: Path) -> bytes:
    """The bytes of the one regular member whose name ends with `suffix`."""
    found = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(suffix)]
    if len(found) != 1:
        raise ValueError(f"{path}: no {suffix} in it (is it ILSVRC-2012's devkit?)")
    f = tar.extractfile(found[0])
    assert f is not None
    return f.read()


def read_devkit(path: str | os.PathLike) -> Devkit:
    """The classes and val labels of the devkit archive at `path`; ValueError, naming the
    file and what is wrong, for anything else."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        with tarfile.open(path) as tar:
            meta, truth = _member(tar, META, path), _member(tar, GROUND_TRUTH, path)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable tar.gz ({err})") from None
    try:
        synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    except Exception as err:  # scipy's errors for a damaged file are of many kinds
        raise ValueError(f"{path}: {META} is not a MAT file with `synsets` ({err})") from None
    missing = [f for f in FIELDS[:5] if synsets.dtype.names is None or f not in synsets.dtype.names]
    if missing:
        raise ValueError(f"{path}: {META}'s synsets lack the field(s) {', '.join(missing)}")
    by_id = {}
    for s in np.atleast_1d(synsets):
        by_id[int(s["ILSVRC2012_ID"])] = (str(s["WNID"]), str(s["words"]), int(s["num_children"]))
    leaves = {i: (w, words) for i, (w, words, children) in by_id.items() if children == 0}
    if not leaves:
        raise ValueError(f"{path}: {META} lists no leaf synset (num_children == 0): no class")
    val_wnids = []
    for n, line in enumerate(truth.decode().split(), 1):
        ident = int(line) if line.isdigit() else None
        if ident not in leaves:
            raise ValueError(
                f"{path}: line {n} of {GROUND_TRUTH} is {line!r}, not the ILSVRC2012_ID of "
                "a class (a leaf synset of meta.mat)"
            )
        val_wnids.append(leaves[ident][0])
    return Devkit(sorted(leaves.values()), val_wnids)


def write_devkit(
    path: str | os.PathLike,
    synsets: list[tuple[int, str, str, int]],
    val_ids: list[int],
) -> None:
    """A devkit archive at `path` in ILSVRC-2012's form (for the sample data and tests):
    `synsets` = (ILSVRC2012_ID, WNID, words, num_children) of each synset, leaves and
    internal ones; `val_ids` = the ID of each val image, in order."""
    from scipy.io import savemat

    table = np.zeros(len(synsets), dtype=[(f, object) for f in FIELDS])
    for row, (ident, wnid, words, children) in zip(table, synsets, strict=True):
        row["ILSVRC2012_ID"], row["WNID"], row["words"] = ident, wnid, words
        row["gloss"], row["num_children"] = f"the gloss of {words}", children
        row["children"] = np.zeros(0, np.uint16) if children == 0 else np.arange(1, children + 1)
        row["wordnet_height"], row["num_train_images"] = int(children > 0), 0
    meta = io.BytesIO()
    savemat(meta, {"synsets": table.reshape(-1, 1)})
    truth = "".join(f"{i}\n" for i in val_ids).encode()
    top = "ILSVRC2012_devkit_t12/"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in ((top + META, meta.getvalue()), (top + GROUND_TRUTH, truth)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
