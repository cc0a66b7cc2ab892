"""SRC's folders, listed: on a local disk (os.scandir) or a prefix in a bucket (one
recursive listing, its objects as `shards.storage.ObjectEntry`s, which the scan uses as
it uses `os.DirEntry`s). The source scan (source.py) asks one of these, whichever SRC is.
"""

from __future__ import annotations

import os
from pathlib import Path

from preprocessing.image import MAX_FILE_BYTES
from shards import storage


def listdir(folder: str | os.PathLike) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


class Disk:
    """SRC's folders on a local disk (os.scandir), by path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def join(self, folder: str | os.PathLike, *names: str) -> str:
        return os.path.join(folder, *names)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def entries(self, folder: str) -> list:
        return listdir(folder)

    def empty(self, folder: str) -> bool:
        """No visible entry (stops at the first one: cheap on a folder of 1,300 images)."""
        with os.scandir(folder) as it:
            return not any(not e.name.startswith(".") for e in it)

    def local(self, path: str) -> Path:
        return Path(path)


class Bucket:
    """SRC as a prefix in a bucket: its folders from one recursive listing; the small label
    files fetched into `here` to be read."""

    def __init__(self, url: str, here: Path) -> None:
        self.root, self.here = url, here
        self.folders = storage.walk(url)

    def join(self, folder: str | os.PathLike, *names: str) -> str:
        return storage.join(str(folder), *names)

    def is_dir(self, path: str) -> bool:
        return path in self.folders and (path == self.root or bool(self.folders[path]))

    def is_file(self, path: str) -> bool:
        folder, _, name = path.rpartition("/")
        return any(e.name == name and not e.folder for e in self.folders.get(folder, ()))

    def entries(self, folder: str) -> list:
        if folder not in self.folders:
            raise FileNotFoundError(f"{folder}: no such prefix")
        return [e for e in self.folders[folder] if not e.name.startswith(".")]

    def empty(self, folder: str) -> bool:
        return not self.entries(folder)

    def local(self, path: str) -> Path:
        copy = self.here / path[len(self.root) + 1 :]
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(storage.read_bytes(path, MAX_FILE_BYTES))
        return copy


Source = Disk | Bucket
