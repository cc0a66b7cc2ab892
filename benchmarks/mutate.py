"""Mutation testing: would a plausible one-line bug get past the tests?

Each mutant below is a one-line change a real bug could look like (an
off-by-one, a wrong constant, a transposed matrix, a wrong axis, N vs N-1, a
check dropped). The script copies the working tree (with its built C
extensions) to a scratch folder once, then for each mutant: applies it, runs
the tests that cover that code with the copy first on PYTHONPATH (so the
`alexnet` command, Dask workers and torchrun processes the tests start import
the mutated code too), and restores the file. A mutant is

    caught (value)   a test failed on an assertion: a value check saw the bug
    caught (error)   a test failed because the code raised or crashed
    survived         every selected test passed: a hole in the tests
    stale            its line is no longer in the file (update the list)

    python benchmarks/mutate.py                 # every mutant (~35-45 min here)
    python benchmarks/mutate.py --list          # the mutants, one line each
    python benchmarks/mutate.py --only lrn-alpha-over-n,pool-2x2
    python benchmarks/mutate.py --json out.json # the results, for a record
    python benchmarks/mutate.py --check         # every mutant's line still there (a test runs it)

Exit status 1 when a mutant survives or is stale. A survivor is either a hole
to close with a test, or an equivalent mutant (one that cannot change any
output); benchmarks/README.md lists the last run's results with the date.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions
    equivalent: str = ""  # why no output can change, for a mutant no test can catch


def m(name: str, path: str, old: str, new: str, *tests: str) -> Mutant:
    return Mutant(name, path, old, new, tests)


def equivalent(mutant: Mutant, why: str) -> Mutant:
    return Mutant(mutant.name, mutant.path, mutant.old, mutant.new, mutant.tests, why)


IMAGE = "tests/test_image.py"
PREP = "tests/test_preprocess.py"
SHARDS = "tests/test_shards.py"
STATS = "tests/test_stats.py"
DATA = "tests/test_train_data.py"
MODEL = "tests/test_model.py"
TRAIN = "tests/test_train.py"
EVAL = "tests/test_evaluate.py"
INTEG = "tests/test_integrity.py"
BUCKET = "tests/test_bucket.py"

MUTANTS = [
    # --- preprocessing: decode, resize, crop -------------------------------------
    m(
        "centre-offset-plus-one",
        "shards/pixels.py",
        "return (size - crop) // 2",
        "return (size - crop + 1) // 2",
        IMAGE,
        EVAL,
        "-k",
        "crop",
    ),
    m(
        "resize-floor-not-round",
        "preprocessing/image.py",
        "return (size, max(size, round(h * size / w)))",
        "return (size, max(size, h * size // w))",
        IMAGE,
    ),
    m(
        "crop-offsets-transposed",
        "preprocessing/image.py",
        "left, top = (new[0] - size) // 2, (new[1] - size) // 2",
        "left, top = (new[1] - size) // 2, (new[0] - size) // 2",
        IMAGE,
    ),
    m(
        "pixel-limit-inclusive",
        "preprocessing/image.py",
        "if width * height > s.max_pixels:",
        "if width * height >= s.max_pixels:",
        IMAGE,
    ),
    m(
        "aspect-limit-inclusive",
        "preprocessing/image.py",
        "if max(width, height) > MAX_ASPECT * min(width, height):",
        "if max(width, height) >= MAX_ASPECT * min(width, height):",
        IMAGE,
    ),
    m(
        "16-bit-floor-not-round",
        "preprocessing/image.py",
        "astype(np.uint32) * 255 + 32767) // 65535)",
        "astype(np.uint32) * 255) // 65535)",
        IMAGE,
    ),
    m(
        "matte-on-black",
        "preprocessing/image.py",
        'white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))',
        'white = Image.new("RGBA", rgba.size, (0, 0, 0, 255))',
        IMAGE,
    ),
    equivalent(
        m(
            "draft-from-the-size-not-twice",
            "preprocessing/image.py",
            'if s.draft and fmt == "JPEG" and min(width, height) >= 2 * s.size:',
            'if s.draft and fmt == "JPEG" and min(width, height) >= s.size:',
            IMAGE,
        ),
        "draft() only picks a DCT scale whose result keeps every requested side, and the "
        "request never goes below `size` on the shorter side: below 2 x size no scale "
        "(1/2 at least) qualifies, so the draft call changes nothing there",
    ),
    m(
        "truncated-reason-lost",
        "preprocessing/image.py",
        'if "truncated" in msg.lower() or isinstance(err, EOFError):',
        "if isinstance(err, EOFError):",
        IMAGE,
        PREP,
        "-k",
        "bad_files or every_input",
    ),
    m(
        "file-size-limit-off-by-one",
        "preprocessing/image.py",
        "if len(data) > limit:",
        "if len(data) > limit + 1:",
        EVAL,
        "-k",
        "huge",
    ),
    # --- preprocessing: the source tree, the plan ------------------------------
    m(
        "synsets-bom-kept",
        "preprocessing/labels.py",
        'path.read_text(encoding="utf-8-sig")',
        'path.read_text(encoding="utf-8")',
        PREP,
        "-k",
        "bom",
    ),
    m(
        "flat-val-unlabelled-dropped",
        "preprocessing/source.py",
        'tree.rejects.append({"path": rel, "reason": f"no label in {tree.val_labels}"})',
        "pass",
        PREP,
        "-k",
        "without_a_label",
    ),
    m(
        "classes-reverse-sorted",
        "preprocessing/source.py",
        'return [(w, "") for w in sorted(folders)]',
        'return [(w, "") for w in sorted(folders, reverse=True)]',
        PREP,
        "-k",
        "other_layouts",
    ),
    m(
        "conflicting-val-labels-last-wins",
        "preprocessing/labels.py",
        "if labels.setdefault(stem, wnid) != wnid:",
        "if labels.update({stem: wnid}):",
        PREP,
        "-k",
        "bom",
    ),
    m(
        "archive-read-not-checked",
        "preprocessing/archives.py",
        "if crc32(data) != crc:",
        "if False:",
        PREP,
        "-k",
        "archives_index",
    ),
    m(
        "archive-identity-by-header-time",
        "preprocessing/source.py",
        'stamp = f"crc32:{self.crc:08x}" if self.archive else self.mtime_ns',
        "stamp = self.mtime_ns",
        PREP,
        "-k",
        "archives_index",
    ),
    m(
        "colliding-keys-not-suffixed",
        "preprocessing/source.py",
        "    if key in keys:\n        key = f",
        "    if key in ():\n        key = f",
        PREP,
        "-k",
        "hostile",
    ),
    m(
        "train-order-ignores-seed",
        "preprocessing/plan.py",
        'return hashlib.sha256(f"{seed}\\0{f.key}".encode()).digest()',
        'return hashlib.sha256(f"0\\0{f.key}".encode()).digest()',
        PREP,
        "-k",
        "seeds",
    ),
    m(
        "shard-size-off-by-one",
        "preprocessing/plan.py",
        "chunks += [files[start : start + n] for start in range(0, len(files), n)]",
        "chunks += [files[start : start + n - 1] for start in range(0, len(files), n - 1)]",
        PREP,
        "-k",
        "every_input or changed_settings or dry_run",
    ),
    # --- shards: format, reader, manifest, locks --------------------------------
    m(
        "key-dots-kept",
        "shards/format.py",
        'stem = stem.replace(".", "_")',
        'stem = stem.replace(".", ".")',
        SHARDS,
    ),
    m(
        "checksum-of-the-last-member-only",
        "shards/format.py",
        "crc = crc32(data, crc)",
        "crc = crc32(data, 0)",
        SHARDS,
        "-k",
        "checksum",
    ),
    m(
        "reader-checks-sample-1-only",
        "shards/reader.py",
        "sample_checksum(fields.values()) != sums[n]",
        "sample_checksum(fields.values()) != sums[0]",
        INTEG,
        "-k",
        "flipped_byte_in",
    ),
    m(
        "short-shard-not-noticed",
        "shards/reader.py",
        "if expected is not None and n != expected.count:",
        "if expected is not None and n > expected.count:",
        INTEG,
        "-k",
        "sample_boundary",
    ),
    m(
        "foreign-record-not-noticed",
        "shards/reader.py",
        'if expected.count != listed.count or data.get("sha256") != listed.sha256:',
        "if expected.count != listed.count:",
        INTEG,
        "-k",
        "another_data_root",
    ),
    m(
        "foreign-size-only-if-larger",
        "shards/reader.py",
        "if expected.size is not None and size != expected.size:",
        "if expected.size is not None and size > expected.size:",
        INTEG,
        "-k",
        "another_data_root",
    ),
    m(
        "split-rejects-miss-listing",
        "shards/manifest.py",
        '"rejected": len(shard_rejects) + listed,',
        '"rejected": len(shard_rejects),',
        PREP,
        "-k",
        "hostile or every_input or cli_preprocess",
    ),
    m(
        "split-count-counts-inputs",
        "shards/manifest.py",
        '"count": sum(r["count"] for r in recs),',
        '"count": sum(r["inputs"] for r in recs),',
        PREP,
        "-k",
        "every_input",
    ),
    m(
        "class-digest-unchecked",
        "shards/manifest.py",
        "if digest is not None and digest != classes_digest(classes):",
        "if digest is None and digest != classes_digest(classes):",
        INTEG,
        "-k",
        "malformed",
    ),
    m(
        "writer-lock-shared",
        "shards/atomic.py",
        "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        "fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)",
        INTEG,
        "-k",
        "waits_for_no_one or two_trainings",
    ),
    m(
        "reader-lock-dropped",
        "shards/atomic.py",
        "fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)",
        "pass",
        INTEG,
        "-k",
        "keeps_preprocess",
    ),
    m(
        "folder-not-fsynced",
        "shards/atomic.py",
        "        _fsync_dir(path.parent)  # the rename itself survives a power cut",
        "        pass",
        INTEG,
        "-k",
        "reach_the_disk",
    ),
    # --- a data root in a bucket ---------------------------------------------------
    m(
        "bucket-manifest-commit-unconditional",
        "shards/remote.py",
        "if storage.etag(target) != self.manifest_etag:",
        "if False:",
        BUCKET,
        "-k",
        "conditional",
    ),
    m(
        "bucket-shard-complete-without-its-tar",
        "shards/remote.py",
        'if "checksums" not in record or self.sizes.get(_key(tar, self.view)) != record["bytes"]:',
        'if "checksums" not in record:',
        BUCKET,
        "-k",
        "killed",
    ),
    m(
        "bucket-run-not-fetched-when-further-on",
        "shards/bucket.py",
        "run_dir.exists() and found.get(METRICS, 0) <= (",
        "run_dir.exists() or found.get(METRICS, 0) <= (",
        BUCKET,
        "-k",
        "trains",
    ),
    # --- statistics -------------------------------------------------------------
    m(
        "covariance-n-minus-1",
        "preprocessing/stats.py",
        "numerator / (n * n)",
        "numerator / (n * (n - 1))",
        STATS,
        "-k",
        "reference",
    ),
    m(
        "mean-over-n-plus-1",
        "preprocessing/stats.py",
        "mean=(total.pixel_sum / total.n_images)",
        "mean=(total.pixel_sum / (total.n_images + 1))",
        STATS,
        "-k",
        "reference",
    ),
    m(
        "eigenvalues-ascending",
        "preprocessing/stats.py",
        "order = np.argsort(values)[::-1]",
        "order = np.argsort(values)",
        STATS,
        "-k",
        "reference",
    ),
    m(
        "eigenvectors-transposed",
        "preprocessing/stats.py",
        "eigenvectors=fix_signs(vectors[:, order].T)",
        "eigenvectors=fix_signs(vectors[:, order])",
        STATS,
        "-k",
        "reference",
    ),
    m(
        "mean-rgb-per-image",
        "preprocessing/stats.py",
        "mean_rgb=np.array([v / n for v in s]",
        "mean_rgb=np.array([v / total.n_images for v in s]",
        STATS,
        "-k",
        "reference",
    ),
    m(
        "sign-rule-flipped",
        "shards/stats.py",
        "if row[np.argmax(np.abs(row))] < 0:",
        "if row[np.argmax(np.abs(row))] > 0:",
        STATS,
        "-k",
        "reference",
    ),
    m(
        "outer-products-not-symmetric",
        "shards/partials.py",
        "                self.rgb_outer[j, i] += v",
        "                pass",
        SHARDS,
        "-k",
        "partials",
    ),
    m(
        "stale-statistics-by-count",
        "shards/stats.py",
        "if stats.shards != expected:",
        "if len(stats.shards) != len(expected):",
        STATS,
        "-k",
        "incremental or count_matches",
    ),
    # --- the loader's augmentations --------------------------------------------
    m(
        "crop-offset-range-short",
        "training/loader/augment.py",
        "top = int(rng.integers(0, image.shape[0] - aug.crop + 1))",
        "top = int(rng.integers(0, image.shape[0] - aug.crop))",
        DATA,
        "-k",
        "crops_stay",
    ),
    m(
        "flip-setting-ignored",
        "training/loader/augment.py",
        "flipped = bool(aug.flip and rng.random() < 0.5)",
        "flipped = bool(rng.random() < 0.5)",
        DATA,
        "-k",
        "flip",
    ),
    m(
        "lighting-basis-transposed-in-use",
        "training/loader/augment.py",
        "shift = (basis @ rng.normal(0.0, aug.sigma, 3))",
        "shift = (basis.T @ rng.normal(0.0, aug.sigma, 3))",
        DATA,
        "-k",
        "lighting",
    ),
    m(
        "lighting-basis-transposed",
        "training/loader/augment.py",
        "return stats.eigenvectors.T @ np.diag(values) * 255.0",
        "return stats.eigenvectors @ np.diag(values) * 255.0",
        DATA,
        "-k",
        "lighting",
    ),
    m(
        "lighting-scale-not-squared",
        "training/loader/augment.py",
        "values = stats.eigenvalues * ratio**2",
        "values = stats.eigenvalues * ratio",
        DATA,
        "-k",
        "lighting",
    ),
    m(
        "mean-not-flipped-with-the-crop",
        "training/loader/augment.py",
        "torch.where(b.flips[:, None], span.flip(0), span)",
        "torch.where(b.flips[:, None], span, span)",
        DATA,
        "-k",
        "mean_is_subtracted or flips_reverse",
    ),
    m(
        "lighting-subtracted",
        "training/loader/augment.py",
        "x = crops.float() - means + b.shifts[:, None, None, :]",
        "x = crops.float() - means - b.shifts[:, None, None, :]",
        DATA,
        "-k",
        "lighting",
    ),
    m(
        "nchw-height-width-swapped",
        "training/loader/augment.py",
        "return (x * input_scale).permute(0, 3, 1, 2)",
        "return (x * input_scale).permute(0, 3, 2, 1)",
        DATA,
        "-k",
        "flips_reverse or mean_is_subtracted or slots",
    ),
    m(
        "ranks-share-shards",
        "training/loader/dataset.py",
        "return order[self.rank if rank is None else rank :: self.world][worker::workers]",
        "return order[0 :: self.world][worker::workers]",
        DATA,
        "-k",
        "ranks_read_disjoint",
    ),
    # --- the model --------------------------------------------------------------
    m(
        "dropout-0.4",
        "training/architecture.py",
        "dropout: float = rule(0.5, minimum=0, below=1)",
        "dropout: float = rule(0.4, minimum=0, below=1)",
        MODEL,
        "-k",
        "papers_numbers or drop_half",
    ),
    m(
        "pool-2x2",
        "training/model.py",
        'return nn.MaxPool2d(3, 2) if config.pool == "overlapping"',
        'return nn.MaxPool2d(2, 2) if config.pool == "overlapping"',
        MODEL,
        "-k",
        "pool",
    ),
    m(
        "odd-class-split",
        "training/architecture.py",
        "first = (self.num_classes + 1) // 2",
        "first = self.num_classes // 2",
        MODEL,
        "-k",
        "papers_numbers",
    ),
    m(
        "lrn-alpha-over-n",
        "training/model.py",
        "return x / (k + alpha * window_sum).pow(beta)",
        "return x / (k + alpha / size * window_sum).pow(beta)",
        MODEL,
        "-k",
        "lrn",
    ),
    m(
        "lrn-divided-swapped",
        "training/model.py",
        'self.alpha = c.lrn_alpha / c.lrn_size if c.lrn == "divided" else c.lrn_alpha',
        'self.alpha = c.lrn_alpha if c.lrn == "divided" else c.lrn_alpha / c.lrn_size',
        MODEL,
        "-k",
        "lrn",
    ),
    m(
        "lrn-after-conv1-only",
        "training/model.py",
        '_LRN_AFTER = ("conv1", "conv2")',
        '_LRN_AFTER = ("conv1",)',
        MODEL,
        "-k",
        "normalisation",
    ),
    m(
        "no-pool-after-conv5",
        "training/model.py",
        'return name in ("conv1", "conv2") or name == config.convs[-1]',
        'return name in ("conv1", "conv2")',
        MODEL,
        "-k",
        "shapes or count",
    ),
    m(
        "bias-one-misses-fc7",
        "training/model.py",
        '_BIAS_ONE = {"conv2", "conv4", "conv5", "fc6", "fc7"}',
        '_BIAS_ONE = {"conv2", "conv4", "conv5", "fc6"}',
        MODEL,
        "-k",
        "initialisation",
    ),
    m(
        "init-std-0.1",
        "training/model.py",
        "nn.init.normal_(module.weight, 0.0, 0.01)",
        "nn.init.normal_(module.weight, 0.0, 0.1)",
        MODEL,
        "-k",
        "initialisation",
    ),
    m(
        "centre-over-one-axis",
        "training/model.py",
        "return x - x.mean((2, 3), keepdim=True) if config.centre_images else x",
        "return x - x.mean(3, keepdim=True) if config.centre_images else x",
        MODEL,
        "-k",
        "centred",
    ),
    m(
        "conv3-sees-one-column",
        "training/architecture.py",
        '"conv3": (192, 3, 1, 1, True),',
        '"conv3": (192, 3, 1, 1, False),',
        MODEL,
        "-k",
        "exchange or count or papers_numbers",
    ),
    # --- optimizer, schedule, the loop -------------------------------------------
    m(
        "decay-without-lr",
        "training/optim.py",
        "alpha=-wd * lr)  # - wd lr w",
        "alpha=-wd)  # - wd lr w",
        MODEL,
        "-k",
        "sgd",
    ),
    m(
        "biases-decayed",
        "training/optim.py",
        'if group["decay_biases"] or p.ndim > 1',
        'if group["decay_biases"] or p.ndim >= 1',
        MODEL,
        "-k",
        "sgd",
    ),
    m(
        "momentum-ignored",
        "training/optim.py",
        "torch._foreach_mul_(velocity, m)  # v <- m v",
        "torch._foreach_mul_(velocity, 0.0)",
        MODEL,
        "-k",
        "sgd",
    ),
    m(
        "plateau-threshold-absolute",
        "training/schedule.py",
        'opt, "min", factor, patience - 1, threshold, "rel", eps=0.0',
        'opt, "min", factor, patience - 1, threshold, "abs", eps=0.0',
        TRAIN,
        "-k",
        "plateau or threshold",
    ),
    m(
        "plateau-patience-off-by-one",
        "training/schedule.py",
        'opt, "min", factor, patience - 1, threshold, "rel", eps=0.0',
        'opt, "min", factor, patience, threshold, "rel", eps=0.0',
        TRAIN,
        "-k",
        "plateau",
    ),
    m(
        "plateau-one-drop-too-many",
        "training/schedule.py",
        "if self.drops >= self.max_drops:",
        "if self.drops > self.max_drops:",
        TRAIN,
        "-k",
        "plateau",
    ),
    m(
        "rate-drop-factor-squared",
        "training/schedule.py",
        "return Plateau(opt, c.lr_patience, c.lr_threshold, c.max_lr_drops, c.lr_factor)",
        "return Plateau(opt, c.lr_patience, c.lr_threshold, c.max_lr_drops, c.lr_factor**2)",
        TRAIN,
        "-k",
        "milestones or drops_resumes",
    ),
    m(
        "best-only-if-strictly-lower",
        "training/train.py",
        "if top1 <= r.schedule.lowest:",
        "if top1 < r.schedule.lowest:",
        TRAIN,
        "-k",
        "smoke_preset",
    ),
    m(
        "validation-labels-shifted",
        "training/validate.py",
        "counts[:2] += topk_error_counts(logits, batch.labels).to(device)",
        "counts[:2] += topk_error_counts(logits, (batch.labels + 1) % logits.shape[1]).to(device)",
        EVAL,
        "-k",
        "one_crop_evaluation",
    ),
    m(
        "global-batch-not-split",
        "training/ranks.py",
        "return config.batch_size // world",
        "return config.batch_size",
        TRAIN,
        "-k",
        "global_batch",
    ),
    # --- evaluation and ensembles ----------------------------------------------
    m(
        "ties-favour-the-label",
        "training/metrics.py",
        "rank = (scores >= own).sum(1) - 1",
        "rank = (scores > own).sum(1)",
        EVAL,
        "-k",
        "topk or constant or zeroed",
    ),
    m(
        "nan-rows-count-as-right",
        "training/metrics.py",
        "torch.isfinite(scores).all(1), rank, scores.shape[1])",
        "torch.isfinite(scores).all(1), rank, 0)",
        EVAL,
        "-k",
        "constant",
    ),
    m(
        "centre-patch-off-by-one",
        "training/inference.py",
        "return [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]",
        "return [(0, 0), (0, far), (far, 0), (far, far), (mid + 1, mid)]",
        EVAL,
        "-k",
        "ten_crop",
    ),
    m(
        "reflections-vertical",
        "training/inference.py",
        "views += [v.flip(2) for v in views]",
        "views += [v.flip(1) for v in views]",
        EVAL,
        "-k",
        "ten_crop",
    ),
    m(
        "views-grouped-wrong",
        "training/inference.py",
        "return probs.reshape(n_views, -1, probs.shape[1]).mean(0)",
        "return probs.reshape(-1, n_views, probs.shape[1]).mean(1)",
        EVAL,
        "-k",
        "averaging",
    ),
    m(
        "ensemble-first-member-only",
        "training/evaluate.py",
        "return member_probs[0] if len(member_probs) == 1 else torch.stack(member_probs).mean(0)",
        "return member_probs[0]",
        EVAL,
        "-k",
        "members_mean",
    ),
    m(
        "ensemble-geometric-mean",
        "training/evaluate.py",
        "return member_probs[0] if len(member_probs) == 1 else torch.stack(member_probs).mean(0)",
        "return torch.stack(member_probs).log().mean(0).exp()",
        EVAL,
        "-k",
        "members_mean",
    ),
    m(
        "views-average-logits",
        "training/inference.py",
        "probs = average_views(torch.softmax(logits.float(), 1), crops)",
        "probs = torch.softmax(average_views(logits.float(), crops), 1)",
        EVAL,
        "-k",
        "computed_by_hand or predict_gives",
    ),
    m(
        "fc7-of-the-first-patch",
        "training/inference.py",
        "centre = 0 if crops == 1 else 4",
        "centre = 0",
        EVAL,
        "-k",
        "centre_crop_features",
    ),
    m(
        "per-class-top1-is-top5",
        "training/evaluate.py",
        '            "top1_error": e[1] / n,\n',
        '            "top1_error": e[5] / n,\n',
        EVAL,
        "-k",
        "zeroed",
    ),
    m(
        "non-finite-outputs-scored",
        "training/evaluate.py",
        "    bad = int(non_finite_rows(probs))",
        "    bad = 0",
        EVAL,
        "-k",
        "non_finite",
    ),
    m(
        "classes-unchecked",
        "training/checkpoint.py",
        "    if wnids != ours:",
        "    if len(wnids) != len(ours):",
        EVAL,
        "-k",
        "another_class",
    ),
]


def _copy_tree(scratch: Path) -> None:
    """The working tree as it is (tracked and new files) with the built C extensions."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    built = [str(p.relative_to(REPO)) for p in REPO.glob("*/*.so")]
    for rel in [*listed, *built]:
        source = REPO / rel
        if source.is_file():
            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, scratch / rel)


def _verdict(code: int, output: str) -> str:
    if code == 0:
        return "survived"
    if code == 5:
        return "no tests ran"
    failure = output.split("= FAILURES =", 1)[-1] if "= FAILURES =" in output else output
    by_value = ("AssertionError", "DID NOT RAISE", "Regex pattern did not match", "Failed: ")
    return "caught (value)" if any(v in failure for v in by_value) else "caught (error)"


def run(mutant: Mutant, scratch: Path, timeout: int) -> tuple[str, float]:
    path = scratch / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        return "stale", 0.0
    path.write_text(original.replace(mutant.old, mutant.new))
    env = {**os.environ, "PYTHONPATH": str(scratch), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests]
    start = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout
        )
        verdict = _verdict(done.returncode, done.stdout + done.stderr)
        if verdict == "survived" and mutant.equivalent:
            verdict = "equivalent"
    except subprocess.TimeoutExpired:
        verdict = "caught (timeout)"
    finally:
        path.write_text(original)
    return verdict, time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument(
        "--check",
        action="store_true",
        help="check that each mutant's line is in its file exactly once (runs no test)",
    )
    ap.add_argument("--only", default="", help="comma-separated mutant names")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per mutant's tests")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    chosen = [x for x in MUTANTS if not args.only or x.name in args.only.split(",")]
    if args.check:
        stale = [x.name for x in chosen if (REPO / x.path).read_text().count(x.old) != 1]
        print(
            f"{len(chosen)} mutants, {len(stale)} stale"
            + (f": {', '.join(stale)}" if stale else "")
        )
        return 1 if stale else 0
    if args.list:
        for x in chosen:
            print(f"{x.name:<36} {x.path:<28} {' '.join(x.tests)}")
        print(f"{len(chosen)} mutants")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="alexnet-mutants-") as tmp:
        scratch = Path(tmp)
        _copy_tree(scratch)
        for i, x in enumerate(chosen, 1):
            verdict, seconds = run(x, scratch, args.timeout)
            results.append({"name": x.name, "path": x.path, "verdict": verdict, "s": seconds})
            print(f"[{i:>2}/{len(chosen)}] {x.name:<36} {verdict:<16} {seconds:6.1f} s", flush=True)
            if verdict == "equivalent":
                print(f"        equivalent: {x.equivalent}", flush=True)
    counts: dict[str, int] = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    total = sum(r["s"] for r in results)
    print(
        f"{len(results)} mutants in {total / 60:.1f} min: "
        + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 1 if any(r["verdict"] in ("survived", "stale", "no tests ran") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
