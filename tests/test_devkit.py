"""ILSVRC-2012's devkit read in place (issue 25): classes in sorted-wnid order, names from
`words`, val labels through the ground truth's IDs, internal synsets left out; a clear
error for each kind of damage."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from preprocessing.devkit import read_devkit, write_devkit

# IDs in the devkit's order, which is not sorted-wnid order (as in the real one, where
# ID 1 is n02119789); two internal synsets (num_children > 0) that are not classes
SYNSETS = [
    (1, "n02119789", "kit fox, Vulpes macrotis", 0),
    (2, "n02100735", "English setter", 0),
    (3, "n01440764", "tench, Tinca tinca", 0),
    (4, "n01443537", "goldfish, Carassius auratus", 0),
    (5, "n00001740", "entity", 4),
    (6, "n01317541", "domestic animal", 2),
]


def test_classes_are_the_leaves_in_sorted_wnid_order_with_their_words(tmp_path):
    write_devkit(tmp_path / "dk.tar.gz", SYNSETS, [3, 1, 4, 2, 1])
    kit = read_devkit(tmp_path / "dk.tar.gz")
    assert kit.classes == [
        ("n01440764", "tench, Tinca tinca"),
        ("n01443537", "goldfish, Carassius auratus"),
        ("n02100735", "English setter"),
        ("n02119789", "kit fox, Vulpes macrotis"),
    ]
    # val labels through the IDs' wnids: ID 3 is tench, index 0 in sorted order (ID - 1
    # would have said 2, the English setter)
    assert kit.val_wnids == ["n01440764", "n02119789", "n01443537", "n02100735", "n02119789"]
    assert kit.val_labels()["ILSVRC2012_val_00000001"] == "n01440764"
    assert kit.val_labels()["ILSVRC2012_val_00000005"] == "n02119789"


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _meta(fields):
    from scipy.io import savemat

    table = np.zeros(1, dtype=[(f, object) for f in fields])
    for f in fields:
        table[0][f] = 1 if f in ("ILSVRC2012_ID", "num_children") else "n01440764"
    table[0]["num_children"] = 0
    buf = io.BytesIO()
    savemat(buf, {"synsets": table.reshape(-1, 1)})
    return buf.getvalue()


def test_damaged_devkits_are_clear_errors(tmp_path):
    good = tmp_path / "good.tar.gz"
    write_devkit(good, SYNSETS, [1, 2])
    members = {}
    with tarfile.open(good) as tar:
        for m in tar.getmembers():
            members[m.name.split("/", 1)[1]] = tar.extractfile(m).read()
    cases = {
        "not-a-tar": (None, "not a readable tar.gz"),
        "no-truth": ({"data/meta.mat": members["data/meta.mat"]}, "no data/ILSVRC2012_valid"),
        "no-meta": ({k: v for k, v in members.items() if "meta" not in k}, "no data/meta.mat"),
        "not-mat": ({**members, "data/meta.mat": b"MATLAB? no"}, "is not a MAT file"),
        "no-wnid": (
            {**members, "data/meta.mat": _meta(["ILSVRC2012_ID", "words", "num_children"])},
            "lack the field",
        ),
        "internal-id": (
            {**members, "data/ILSVRC2012_validation_ground_truth.txt": b"1\n5\n"},
            "line 2 of .* is '5', not the ILSVRC2012_ID of a class",
        ),
        "not-a-number": (
            {**members, "data/ILSVRC2012_validation_ground_truth.txt": b"1\nfox\n"},
            "line 2 of .* is 'fox'",
        ),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.tar.gz"
        if content is None:
            path.write_bytes(b"\x1f\x8b not really gzip")
        else:
            _tar(path, content)
        with pytest.raises(ValueError, match=message):
            read_devkit(path)


def test_the_archive_listing_benchmark_runs(tmp_path):
    """benchmarks/archives.py --dry-run: the scale script that indexes a train tar of class
    tars in fresh processes, cold in one process and on 2 Dask workers, and warm (the
    figures in benchmarks/README.md come from its full run)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "archives.py"
    cmd = [sys.executable, str(script), "--dry-run", "--workdir", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["members"] == 100 and result["class_tars"] == 5
    assert result["index_files"] == 5  # one listing per class tar
    assert result["cold-2"]["largest_other_mib"] > 0  # its workers ran the listing
