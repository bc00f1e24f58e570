"""Image+text documents from the formats people keep them in, decoded with Pillow.

- a folder: image files with a caption beside them (`key.txt`, or `key.json` with "caption" or
  "text"), plus any *.jsonl and *.tar in it, in sorted order;
- JSONL: {"image": path, "text": ...} pairs, or interleaved {"images": [paths], "text": "... <image>
  ..."} documents (paths relative to the file);
- WebDataset tar shards (LAION's and DataComp's layout): members `key.jpg` (or png, webp, ...) with
  `key.txt` and/or `key.json` beside them, grouped by key (the name up to its first dot).

In a document's text, IMAGE_MARK stands where each image sits; a caption (no mark) follows its image.
A bad input (an unreadable, truncated, empty or huge image, a missing file, a pair without text or
without image, a malformed line) is a counted skip naming its file and key, never a crash, and never
costs the good pairs around it.
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from PIL import Image

from kiln.errors import KilnError

IMAGE_MARK = "<image>"
"""Where an image sits in an interleaved document's text."""
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
"""The only formats Pillow may decode (it detects a format from the bytes, not the name): an EPS
file named .jpg would otherwise run Ghostscript on its PostScript."""


@dataclass
class ImageDoc:
    """One document: its images (RGB) and its text, with IMAGE_MARK where each image sits (or none:
    the images come first, as for a caption)."""

    key: str
    origin: str
    """Where it came from, for messages: 'file.tar:key', 'pairs.jsonl:12'."""
    images: list[Image.Image]
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImageReadStats:
    """What reading skipped, by reason, with the first few skips named."""

    num_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    max_samples: int = 20

    def skip(self, origin: str, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.samples) < self.max_samples:
            self.samples.append(f"{origin}: {reason}")

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())


def decode_image(data: bytes, max_pixels: int) -> Image.Image | str:
    """RGB image, or the reason it is unusable: empty, too_large (more than max_pixels, checked from
    the header before any pixel is decoded), unreadable (not one of IMAGE_FORMATS) or truncated."""
    if not data:
        return "empty"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                return "too_large"
            if width == 0 or height == 0:
                return "empty"
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "too_large"
    except Image.UnidentifiedImageError:
        return "unreadable"
    except (OSError, SyntaxError, ValueError):  # truncated data, broken headers
        return "truncated"
    return image.convert("RGB")


def _caption(text: str | None, meta: str | None) -> tuple[str | None, dict[str, Any]]:
    """A pair's text from its .txt, else its .json's "caption"/"text"; the JSON's other fields as metadata."""
    record: dict[str, Any] = {}
    if meta:
        try:
            loaded = json.loads(meta)
            record = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError:
            record = {}
    if text is None:
        found = record.get("caption", record.get("text"))
        text = found if isinstance(found, str) else None
    nested: dict[str, Any] = record["meta"] if isinstance(record.get("meta"), dict) else {}
    scalars = {k: v for k, v in {**record, **nested}.items() if isinstance(v, str | int | float) and k != "text"}
    return (text.strip() if text else None), scalars


def _confined(name: str) -> bool:
    """Whether an image path from a JSONL record stays under the JSONL's folder: relative, without
    '..' or '~' (checked by name, so a record cannot reach /etc/... or a home directory)."""
    parts = PurePath(name).parts
    return bool(parts) and not PurePath(name).is_absolute() and ".." not in parts and not name.startswith("~")


class _Reader:
    def __init__(self, max_pixels: int, stats: ImageReadStats, paths_outside: bool = False) -> None:
        self.max_pixels, self.stats, self.paths_outside = max_pixels, stats, paths_outside

    def make(self, key: str, origin: str, blobs: list[bytes], text: str | None, meta: dict) -> ImageDoc | None:
        if text is None or not text.strip():
            self.stats.skip(origin, "no_text")
            return None
        if not blobs:
            self.stats.skip(origin, "no_image")
            return None
        images = []
        for blob in blobs:
            image = decode_image(blob, self.max_pixels)
            if isinstance(image, str):
                self.stats.skip(origin, image)
                return None
            images.append(image)
        if text.count(IMAGE_MARK) not in (0, len(images)):
            self.stats.skip(origin, "image_marks_mismatch")
            return None
        self.stats.num_read += 1
        return ImageDoc(key, origin, images, text, meta)

    def tar(self, path: Path) -> Iterator[ImageDoc]:
        """Streams: a WebDataset shard keeps a key's members together, so a group is complete when the
        next key starts and memory holds one group at a time."""
        key: str | None = None
        parts: dict[str, bytes] = {}
        size = path.stat().st_size
        plain = not _compressed(path)  # a compressed tar's offsets are in its decompressed stream
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if plain and member.offset_data + member.size > size:
                        raise tarfile.ReadError("a member runs past the end of the file")
                    base = member.name.rsplit("/", 1)[-1]
                    if not member.isfile() or "." not in base:
                        continue
                    stem, ext = base.split(".", 1)
                    name = member.name[: len(member.name) - len(base)] + stem
                    if name != key:
                        if key is not None:
                            yield from self._group(path, key, parts)
                        key, parts = name, {}
                    f = tar.extractfile(member)
                    parts["." + ext.lower()] = f.read() if f is not None else b""
                ended = tar.offset
            # tarfile stops quietly at a cut header (a cut compressed tar fails in its decompressor)
            if plain and not _ends_cleanly(path, ended):
                raise tarfile.ReadError("no end-of-archive marker: the file was cut")
        except (tarfile.TarError, OSError, EOFError) as e:
            self.stats.skip(f"{path} ({e})", "damaged_tar")  # what was read before the damage is kept
            parts = {}
        if key is not None and parts:
            yield from self._group(path, key, parts)

    def _group(self, path: Path, key: str, parts: dict[str, bytes]) -> Iterator[ImageDoc]:
        # key.jpg, then key.1.jpg, key.2.jpg, ... for a document of several images
        names = [e for e in parts if e.endswith(IMAGE_EXTENSIONS)]
        blobs = [parts[e] for e in sorted(names, key=lambda e: (e.count("."), e))]
        txt = parts.get(".txt")
        text, meta = _caption(_text(txt), _text(parts.get(".json")))
        doc = self.make(str(meta.get("key", key)), f"{path}:{key}", blobs, text, meta)
        if doc is not None:
            yield doc

    def jsonl(self, path: Path) -> Iterator[ImageDoc]:
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            origin = f"{path}:{n}"
            try:
                record = json.loads(line)
                paths = record["images"] if "images" in record else [record["image"]]
                text = record.get("text", record.get("caption"))
                if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                    raise TypeError("images must be a list of paths")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                self.stats.skip(origin, f"malformed ({type(e).__name__})")
                continue
            blobs = []
            for name in paths:
                if not (self.paths_outside or _confined(name)):
                    self.stats.skip(f"{origin} ({name})", "outside")  # images.paths_outside allows it
                    break
                file = (path.parent / name).expanduser()
                if not file.is_file():
                    self.stats.skip(f"{origin} ({name})", "missing")
                    break
                blobs.append(file.read_bytes())
            else:
                key = str(record.get("key", f"{path.stem}-{n}"))
                meta = {
                    k: v for k, v in record.items() if isinstance(v, str | int | float) and k not in ("text", "image")
                }
                doc = self.make(key, origin, blobs, text if isinstance(text, str) else None, meta)
                if doc is not None:
                    yield doc

    def folder(self, root: Path) -> Iterator[ImageDoc]:
        for file in sorted(root.rglob("*")):
            if not file.is_file():
                continue
            suffix = file.suffix.lower()
            if suffix == ".jsonl":
                yield from self.jsonl(file)
            elif suffix == ".tar":
                yield from self.tar(file)
            elif suffix in IMAGE_EXTENSIONS:
                txt, js = file.with_suffix(".txt"), file.with_suffix(".json")
                text, meta = _caption(
                    txt.read_text(encoding="utf-8", errors="replace") if txt.exists() else None,
                    js.read_text(encoding="utf-8", errors="replace") if js.exists() else None,
                )
                key = str(file.relative_to(root).with_suffix(""))
                doc = self.make(key, str(file), [file.read_bytes()], text, meta)
                if doc is not None:
                    yield doc


COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
"""The first bytes of gzip, bzip2 and xz: the compressions tarfile opens by itself."""


def _compressed(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(6).startswith(COMPRESSED_MAGIC)


def _ends_cleanly(path: Path, offset: int) -> bool:
    """Whether a tar holds its end-of-archive marker (a zero block) where its last member ended."""
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(512) == bytes(512)


def _text(data: bytes | None) -> str | None:
    return data.decode("utf-8", "replace") if data is not None else None


def read_image_docs(
    source: str | Path, max_pixels: int, stats: ImageReadStats, paths_outside: bool = False
) -> Iterator[ImageDoc]:
    """Every good document of a folder, .jsonl or .tar, in a fixed order; skips go to `stats`. A JSONL
    record's image paths must stay under the JSONL's folder unless `paths_outside`."""
    path = Path(source).expanduser()
    reader = _Reader(max_pixels, stats, paths_outside)
    if path.is_dir():
        return reader.folder(path)
    if path.is_file() and path.suffix.lower() == ".jsonl":
        return reader.jsonl(path)
    if path.is_file() and (path.suffix.lower() == ".tar" or path.name.endswith((".tar.gz", ".tgz"))):
        return reader.tar(path)
    raise KilnError(
        f"images.source={source!r} is not 'shapes', a folder, a .jsonl or a .tar; see `kiln run --help` (images.source)"
    )
