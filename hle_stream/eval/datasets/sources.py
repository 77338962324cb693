"""Where a built-in dataset's files are found, and how to fetch them from their publisher.

A dataset is looked for, in order, under ``--data-root`` (or ``HLE_DATA_ROOT``), the user cache
(``~/.cache/hle-stream/data``, where ``hle-stream data fetch`` puts it), the system's dataset
folder (``/usr/share/datasets``, where Debian's ``dataset-*`` packages install), and the
``shared/data`` folder beside this repository (the development layout). A download is checked
against the publisher's MD5 of each file or, as the Debian package re-packs the archives, the
SHA-256 of its uncompressed content; it lands in the cache only once every file checks out.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hle_stream.eval.paths import REPO_ROOT, default_cache_dir

SYSTEM_DATASETS = Path("/usr/share/datasets")


@dataclass(frozen=True)
class PublishedFile:
    name: str
    md5: str  # of the file as its publisher serves it
    content_sha256: str  # of its uncompressed content, whichever archive carries it


@dataclass(frozen=True)
class Source:
    folder: str  # under a data root
    files: tuple[PublishedFile, ...]
    url: str  # the publisher's folder of the files
    debian_package: str | None = None


SOURCES = {
    "fashion-mnist": Source(
        "fashion-mnist",
        (PublishedFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                       "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
         PublishedFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                       "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
         PublishedFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                       "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
         PublishedFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                       "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34")),
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "dataset-fashion-mnist"),
}


class FetchError(RuntimeError):
    """A download that did not happen or did not check out; the message says why in one line."""


def data_cache() -> Path:
    """Where ``hle-stream data fetch`` puts datasets."""
    return default_cache_dir() / "data"


def search_roots(data_root: Path | None = None) -> list[Path]:
    """The folders a dataset is looked for under, in order."""
    explicit = data_root or os.environ.get("HLE_DATA_ROOT")
    roots = [Path(explicit)] if explicit else []
    return [*roots, data_cache(), SYSTEM_DATASETS, REPO_ROOT.parent / "shared" / "data"]


def missing_message(name: str, folder: Path, roots: list[Path]) -> str:
    """One line: where ``name`` was looked for, and the ways to get it."""
    where = ", ".join(str(root / folder) for root in roots)
    source = SOURCES.get(name)
    if source is None:
        return f"the {name} dataset is not in any of {where}; point --data-root (or HLE_DATA_ROOT) at the folder " \
               f"that holds {folder.parts[0]}/"
    files = ", ".join(f.name for f in source.files)
    return (f"the {name} dataset is not in any of {where}. Get it with 'hle-stream data fetch {name}' (needs the "
            f"network), 'apt-get install {source.debian_package}' (Debian, Ubuntu), or by copying its four files "
            f"({files}) into {data_cache() / source.folder}; 'hle-stream demo --dataset synthetic' runs now "
            "without any")


def fetch(name: str, base_url: str | None = None, timeout: float = 30.0) -> Path:
    """Download dataset ``name`` from its publisher (or a mirror at ``base_url``) into the user
    cache and return its folder; a complete copy already there is kept. Raises ``FetchError``."""
    source = SOURCES.get(name)
    if source is None:
        raise FetchError(f"no download is known for {name!r}; fetchable: {', '.join(SOURCES)}")
    target = data_cache() / source.folder
    if all(_checks_out(target / f.name, f) for f in source.files):
        return target
    url = (base_url or source.url).rstrip("/") + "/"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{source.folder}-"))
    try:
        for published in source.files:
            path = staging / published.name
            _download(url + published.name, path, timeout)
            if not _checks_out(path, published):
                raise FetchError(f"{url}{published.name} does not match its published checksum; not kept")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _download(url: str, path: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, path.open("wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise FetchError(f"cannot download {url}: {reason}") from None


def _checks_out(path: Path, published: PublishedFile) -> bool:
    if not path.is_file():
        return False
    if _digest(path.open("rb"), hashlib.md5()) == published.md5:
        return True
    try:
        return _digest(gzip.open(path, "rb"), hashlib.sha256()) == published.content_sha256
    except (OSError, EOFError):
        return False


def _digest(stream, digest) -> str:  # type: ignore[no-untyped-def]
    with stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
