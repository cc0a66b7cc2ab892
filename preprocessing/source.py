"""Reading an ImageNet source tree: classes, labels, and the list of input files.

Layouts understood (either split may be absent):

    SRC/train/<wnid>/*                     class folders
    SRC/val/<wnid>/*                       class folders, or
    SRC/val/*  + a labels file             flat, labelled by one of:
        LOC_val_solution.csv               Kaggle: ImageId,PredictionString (wnid first)
        val.txt / val_labels.txt           "filename wnid" or "filename index" per line
    SRC/LOC_synset_mapping.txt             "wnid name" per line, in class-index order;
                                           without it, class index = sorted wnid order

The Kaggle download, as unpacked, holds the same folders one level down:
SRC/ILSVRC/Data/CLS-LOC/{train,val,test}/, with LOC_val_solution.csv and
LOC_synset_mapping.txt in SRC. It is found by itself; its inputs get the same
relative paths (`train/<wnid>/...`, `val/...`), keys and labels as the same
images in the tree above, so both give the same shards. (test/ has no labels
and is not read.)

ILSVRC-2012's official files, as downloaded into SRC, are read in place
(preprocessing/archives.py, preprocessing/devkit.py): ILSVRC2012_img_train.tar
and/or ILSVRC2012_img_val.tar with ILSVRC2012_devkit_t12.tar.gz, each class tar
listed once into an index (preprocessing/index.py). Their images
get the tree's relative paths too (`train/<wnid>/<name>`, `val/<name>`); the
classes are the devkit's leaves in sorted-wnid order, named by their words, and
the val labels come from its ground truth.

Every regular, non-hidden file in those folders is an input, whatever its
extension says: the decoder decides by content what it is. Inputs that cannot
be given a label become rejects here, with the reason.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from preprocessing.archives import TRAIN_TAR, VAL_TAR, Member, read_member
from preprocessing.devkit import DEVKIT, read_devkit
from preprocessing.image import MAX_FILE_BYTES, read_image_file
from preprocessing.index import Indexer
from preprocessing.labels import read_synsets, read_val_labels
from preprocessing.listing import Bucket, Disk, Source
from shards import storage
from shards.format import SPLITS, sample_key

SYNSET_MAPPING = "LOC_synset_mapping.txt"
KAGGLE_IMAGES = "ILSVRC/Data/CLS-LOC"  # the Kaggle download's image folders, under SRC
VAL_LABEL_FILES = ("LOC_val_solution.csv", "val/LOC_val_solution.csv", "val.txt", "val_labels.txt")


@dataclass(frozen=True, slots=True)  # 1.33M of them at ImageNet size: no __dict__ each
class SourceFile:
    """One input image (by path; not yet read)."""

    split: str
    relpath: str  # POSIX path relative to SRC, e.g. "train/n01440764/n01440764_10026.JPEG"
    key: str  # the sample's __key__, unique within the split
    label: int
    size: int
    mtime_ns: int
    archive: str = ""  # the official archive that holds it (relative to SRC), if any
    offset: int = 0  # where its bytes start in that archive
    crc: int = 0  # in an archive: the CRC-32 of its bytes, from the index

    def identity(self) -> str:
        """What says whether this input changed: path, size, mtime and label; in an
        archive, its CRC-32 instead of a time (the content, whatever the download's date)."""
        stamp = f"crc32:{self.crc:08x}" if self.archive else self.mtime_ns
        return f"{self.relpath}\t{self.size}\t{stamp}\t{self.label}"


@dataclass
class SourceTree:
    root: Path | str  # SRC: the labels files (a str: the URL of a prefix in a bucket)
    classes: list[tuple[str, str]]  # (wnid, name) in class-index order
    files: dict[str, list[SourceFile]] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)  # {"path", "reason"} found while scanning
    val_labels: str | None = None  # the labels file used, relative to SRC
    warnings: list[str] = field(default_factory=list)  # usable, but probably not meant
    images: Path | str | None = None  # where the split folders are, if not in `root` (Kaggle's)

    @property
    def image_root(self) -> Path | str:
        """The folder that the inputs' relative paths start from."""
        return self.images if self.images is not None else self.root

    def location(self) -> str:
        """`image_root` as a string any machine can read it by (a local one resolved)."""
        root = self.image_root
        return root if isinstance(root, str) else str(root.resolve())

    def source(self) -> str:
        """SRC as the manifest names it (a local one resolved)."""
        return self.root if isinstance(self.root, str) else str(self.root.resolve())

    def fingerprint(self) -> str:
        """sha256 over the class list and every input's identity (see SourceFile.identity)."""
        h = hashlib.sha256()
        for wnid, name in self.classes:
            h.update(f"class\t{wnid}\t{name}\n".encode())
        for split in sorted(self.files):
            for f in self.files[split]:
                h.update(f"{split}\t{f.identity()}\n".encode())
        for r in self.rejects:
            h.update(f"reject\t{r['path']}\n".encode())
        return h.hexdigest()

    @property
    def n_inputs(self) -> int:
        return sum(len(v) for v in self.files.values()) + len(self.rejects)


def read_input(root: str | os.PathLike, f: SourceFile) -> bytes:
    """An input's bytes: from its file under `root`, or from its archive in `root`."""
    if f.archive:
        return read_member(Path(root) / f.archive, f.offset, f.size, MAX_FILE_BYTES, f.crc)
    if storage.is_url(root):
        return storage.read_bytes(storage.join(str(root), f.relpath), MAX_FILE_BYTES)
    return read_image_file(Path(root) / f.relpath)


def escaped(name: str) -> str:
    """A file name that is not valid UTF-8 (its bad bytes came back from the OS as
    surrogates), as text that can be printed and stored: b'bad\\xff.JPEG'."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _not_utf8(rel: str) -> dict:
    return {
        "path": escaped(rel),
        "reason": "the file or folder name is not valid UTF-8 (rename it to include it)",
    }


def _is_file(e: os.DirEntry, rel: str, tree: SourceTree) -> bool:
    """Whether `e` is a regular file (links followed); one that cannot be looked at (a
    symlink loop, a dangling link, no permission) becomes a reject with the reason."""
    try:
        if e.is_file():
            e.stat()  # follows the link: a file that cannot be stat'ed is a reject here
            return True
        if not e.is_dir() and e.is_symlink():
            os.stat(e.path)  # a dangling or looping link: raises
    except OSError as err:
        tree.rejects.append({"path": rel, "reason": f"cannot be read: {err.strerror or err}"})
    return False


def scan(
    src: str | os.PathLike,
    splits: tuple[str, ...] = SPLITS,
    val_labels: str | os.PathLike | None = None,
    indexer: Indexer | None = None,
) -> SourceTree:
    """List every labelled input of `splits` under `src`; ValueError if the tree is unusable.
    (`indexer`: where the official archives' listings are kept, and who lists them.)
    SRC may be a bucket's URL (s3://...): its objects are listed once and read by URL."""
    if storage.is_url(src):
        with tempfile.TemporaryDirectory(prefix="alexnet-labels-") as here:
            found = Bucket(storage.check_url(str(src)), Path(here))
            if not found.is_dir(found.root):
                raise FileNotFoundError(f"source {found.root} holds no object")
            if found.is_file(found.join(found.root, DEVKIT)):
                raise ValueError(
                    f"{found.root}: the official archives are read from a local disk only; "
                    "copy them to one (or upload the extracted tree to the bucket)"
                )
            return _scan_tree(found, splits, val_labels)
    root = Path(src)
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist")
    if (root / DEVKIT).is_file() and any((root / a).is_file() for a in (TRAIN_TAR, VAL_TAR)):
        return _scan_official(root, splits, indexer or Indexer())
    return _scan_tree(Disk(root), splits, val_labels)


def check_layout(src: str | os.PathLike) -> None:
    """A clear error at once, without listing anything, for a local SRC that holds none of
    the layouts `scan` reads (so a command checks it before it starts a server)."""
    root = Path(src)
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist")
    official = (root / DEVKIT).is_file() and any((root / a).is_file() for a in (TRAIN_TAR, VAL_TAR))
    if not (
        official or any((root / s).is_dir() for s in SPLITS) or (root / KAGGLE_IMAGES).is_dir()
    ):
        raise ValueError(
            f"{root} has none of train/, val/ (expected an ImageNet tree, the Kaggle download "
            f"with {KAGGLE_IMAGES}/ in it, or the official archives with {DEVKIT})"
        )


def _scan_tree(
    src: Source, splits: tuple[str, ...], val_labels: str | os.PathLike | None
) -> SourceTree:
    """The class-folder tree (or Kaggle's) at `src`, listed."""
    root = src.root
    images: Path | str = root
    kaggle = src.join(root, KAGGLE_IMAGES)
    if not any(src.is_dir(src.join(root, s)) for s in SPLITS) and src.is_dir(kaggle):
        images = Path(kaggle) if isinstance(root, Path) else kaggle  # the Kaggle download
    present = [s for s in splits if src.is_dir(src.join(images, s))]
    if not present:
        raise ValueError(
            f"{root} has none of {'/, '.join(splits)}/ (expected an ImageNet tree, or the "
            f"Kaggle download with {KAGGLE_IMAGES}/ in it)"
        )

    # each split's folder listed once (a flat val/ holds 50,000 files)
    top = {split: src.entries(src.join(images, split)) for split in present}
    dirs = {split: [e for e in top[split] if _is_dir(e)] for split in present}
    class_dirs = {split: [e for e in dirs[split] if _utf8(e.name)] for split in present}
    classes = _classes(src, present, {e.name: e for s in present for e in class_dirs[s]})
    tree = SourceTree(root, classes, images=images if images != root else None)
    for split in present:  # class folders whose names cannot be stored
        for e in dirs[split]:
            if not _utf8(e.name):
                tree.rejects.append(_not_utf8(f"{split}/{e.name}/"))
    index = {w: i for i, (w, _) in enumerate(classes)}
    for split in present:
        folders = class_dirs[split]
        if split == "val" and not folders:
            tree.files[split] = _scan_flat_val(src, top[split], tree, index, val_labels)
        else:
            tree.files[split] = _scan_class_folders(src, split, folders, tree, index)
    if not tree.classes:
        # a flat val with wnid labels and no mapping or train folders
        raise ValueError(f"{root}: no classes found (no {SYNSET_MAPPING}, no class folders)")
    tree.rejects.sort(key=lambda r: r["path"])
    _warn_unlearnable(tree)
    return tree


def _classes(src: Source, present: list[str], folders: dict[str, os.DirEntry]) -> list:
    """(wnid, name) in class-index order: the mapping file's, whose every class must have a
    folder when there are class folders; else every class folder, sorted."""
    mapping = src.join(src.root, SYNSET_MAPPING)
    if src.is_file(mapping):
        classes = read_synsets(src.local(mapping))
        missing = [w for w, _ in classes if w not in folders]
        if folders and missing:
            raise ValueError(
                f"{mapping} names {len(missing)} class(es) with no folder in "
                f"{'/ or '.join(present)}/ (the first: {missing[0]!r}): such a class would "
                "have no images; add its folder, or remove it from the mapping"
            )
        return classes
    for _, e in sorted(folders.items()):
        if src.empty(e.path):
            raise ValueError(
                f"{e.path}/ is empty: without {SYNSET_MAPPING} every class folder is a "
                "class, so an empty one would shift the index of every class after it; "
                f"remove it, or add {SYNSET_MAPPING}"
            )
    return [(w, "") for w in sorted(folders)]


def _warn_unlearnable(tree: SourceTree) -> None:
    """A warning for classes with validation images but no training image."""
    if "train" in tree.files and "val" in tree.files:
        trained = {f.label for f in tree.files["train"]}
        unseen = sorted({f.label for f in tree.files["val"]} - trained)
        if unseen:
            tree.warnings.append(
                f"{len(unseen)} class(es) have validation images but no training image (the "
                f"first: {tree.classes[unseen[0]][0]}): a model cannot learn them"
            )


def _is_dir(e: os.DirEntry) -> bool:
    try:
        return e.is_dir()
    except OSError:  # a symlink loop: not a folder (as a file, it becomes a reject)
        return False


def _unique(key: str, name: str, keys: set[str]) -> str:
    """`key`, or when another file of the split already has it (`a.b.JPEG` and `a_b.JPEG`
    both give `a_b`; `a.JPEG` and `a.png` both `a`) `key` + `_` + 8 hex digits of the
    file's own name: every file keeps a key of its own. Files are listed in name order,
    so which one carries the suffix does not depend on the machine."""
    if key in keys:
        key = f"{key}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    keys.add(key)
    return key


def _file(split: str, relpath: str, key: str, label: int, e: os.DirEntry) -> SourceFile:
    st = e.stat()
    return SourceFile(split, relpath, key, label, st.st_size, st.st_mtime_ns)


def _scan_class_folders(
    src: Source, split: str, folders: list[os.DirEntry], tree: SourceTree, index: dict[str, int]
) -> list[SourceFile]:
    files, keys = [], set()
    for folder in folders:
        try:
            entries = src.entries(folder.path)
        except OSError as err:
            reason = f"cannot list the class folder: {err.strerror or err}"
            tree.rejects.append({"path": f"{split}/{folder.name}/", "reason": reason})
            continue
        for e in entries:
            rel = f"{split}/{folder.name}/{e.name}"
            if not _utf8(e.name):
                tree.rejects.append(_not_utf8(rel))
                continue
            if not _is_file(e, rel, tree):
                continue
            key = sample_key(f"{folder.name}/{e.name}")
            if folder.name not in index:
                tree.rejects.append(
                    {
                        "path": rel,
                        "reason": f"class folder {folder.name!r} is not in {SYNSET_MAPPING}",
                    }
                )
            else:
                key = _unique(key, e.name, keys)
                files.append(_file(split, rel, key, index[folder.name], e))
    return files


def _scan_flat_val(
    src: Source,
    entries: list[os.DirEntry],
    tree: SourceTree,
    index: dict[str, int],
    val_labels: str | os.PathLike | None,
) -> list[SourceFile]:
    if val_labels is not None:
        label_path = Path(val_labels)
        if not label_path.is_file():
            raise FileNotFoundError(f"val labels file {label_path} does not exist")
        local = isinstance(src.root, Path)
        tree.val_labels = os.path.relpath(label_path, src.root) if local else str(label_path)
    else:
        found = [c for c in VAL_LABEL_FILES if src.is_file(src.join(src.root, c))]
        if not found:
            raise ValueError(
                f"{tree.image_root}/val/ is flat but no labels file was found (looked for "
                f"{', '.join(VAL_LABEL_FILES)} under {src.root}); pass --val-labels, or "
                "preprocess only the train split (--splits train)"
            )
        label_path, tree.val_labels = src.local(src.join(src.root, found[0])), found[0]
    wnids = [w for w, _ in tree.classes] if tree.classes else None
    labels = read_val_labels(label_path, wnids)
    if not tree.classes:
        tree.classes = [(w, "") for w in sorted(set(labels.values()))]
        index.update({w: i for i, (w, _) in enumerate(tree.classes)})
    files = []
    keys = set()
    for e in entries:  # val/'s listing
        rel, key = f"val/{e.name}", sample_key(e.name)
        if not _utf8(e.name):
            tree.rejects.append(_not_utf8(rel))
            continue
        if not _is_file(e, rel, tree):
            continue
        wnid = labels.get(key) or labels.get(Path(e.name).stem)
        if wnid is None:
            tree.rejects.append({"path": rel, "reason": f"no label in {tree.val_labels}"})
        elif wnid not in index:
            tree.rejects.append({"path": rel, "reason": f"label {wnid!r} is not a known class"})
        else:
            files.append(_file("val", rel, _unique(key, e.name, keys), index[wnid], e))
    if not files and tree.rejects:
        raise ValueError(
            f"no image in {tree.image_root}/val/ has a usable label in {tree.val_labels} "
            f"(the first: {tree.rejects[0]['path']}: {tree.rejects[0]['reason']})"
        )
    return files


def _scan_official(root: Path, splits: tuple[str, ...], indexer: Indexer) -> SourceTree:
    """The official archives' images, listed in place (see the module docstring)."""
    kit = read_devkit(root / DEVKIT)
    tree = SourceTree(root, kit.classes)
    index = {w: i for i, (w, _) in enumerate(kit.classes)}
    if "train" in splits and (root / TRAIN_TAR).is_file():
        chunks, keys = [], set()
        for tar, members in indexer.train(root / TRAIN_TAR):  # one class tar at a time
            if isinstance(members, str):  # it could not be listed
                tree.rejects.append({"path": f"train/{tar.folder}/", "reason": members})
                continue
            if tar.folder not in index:
                reason = f"class tar {tar.name} is not a class of the devkit"
                tree.rejects += [
                    {"path": f"train/{m.folder}/{m.name}", "reason": reason} for m in members
                ]
                continue
            chunk = []
            for m in sorted(members, key=lambda m: m.name):
                rel = f"train/{m.folder}/{m.name}"
                key = _unique(sample_key(f"{m.folder}/{m.name}"), m.name, keys)
                chunk.append(_member_file("train", rel, key, index[m.folder], TRAIN_TAR, m))
            chunks.append((tar.folder, chunk))
        tree.rejects += indexer.rejects
        chunks.sort(key=lambda c: c[0])  # the tree's order: by class folder, then name
        files = [f for _, chunk in chunks for f in chunk]
        tree.files["train"] = files
    if "val" in splits and (root / VAL_TAR).is_file():
        members = sorted(indexer.val(root / VAL_TAR), key=lambda m: m.name)
        if len(members) != len(kit.val_wnids):
            raise ValueError(
                f"{root / VAL_TAR} holds {len(members)} images, the devkit's ground truth "
                f"labels {len(kit.val_wnids)}: not the archives of one release"
            )
        labels, files, keys = kit.val_labels(), [], set()
        tree.val_labels = DEVKIT
        for m in members:
            rel, key = f"val/{m.name}", _unique(sample_key(m.name), m.name, keys)
            wnid = labels.get(Path(m.name).stem)
            if wnid is None:
                tree.rejects.append({"path": rel, "reason": f"no label in {DEVKIT}"})
                continue
            files.append(_member_file("val", rel, key, index[wnid], VAL_TAR, m))
        tree.files["val"] = files
    if not tree.files:
        raise ValueError(f"{root}: the devkit, but none of {TRAIN_TAR}, {VAL_TAR} for {splits}")
    tree.rejects.sort(key=lambda r: r["path"])
    _warn_unlearnable(tree)
    return tree


def _member_file(split: str, rel: str, key: str, label: int, archive: str, m: Member) -> SourceFile:
    return SourceFile(split, rel, key, label, m.size, m.mtime * 10**9, archive, m.offset, m.crc)
