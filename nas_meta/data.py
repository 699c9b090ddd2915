"""Loading Omniglot: find or download the official zips, validate them, decode once into a cache, split classes.

Omniglot (Lake et al., 2015) has 1623 characters from 50 alphabets, 20 drawings each, shipped as
``images_background.zip`` (30 alphabets, 964 characters) and ``images_evaluation.zip`` (20 alphabets,
659 characters). Images are 105x105 1-bit PNGs with True = background; we resize them anti-aliased to
the configured size and store ink intensity (ink = 1).

Class splits are named *protocols* (see :data:`PROTOCOLS`); train, dev and test never share a character.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ConfigError, DataError
from .runtime import default_cache_dir, home_expanded, public_mode

logger = logging.getLogger(__name__)

ZIP_NAMES = ("images_background", "images_evaluation")
DOWNLOAD_URLS = {
    "images_background": "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_background.zip",
    "images_evaluation": "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_evaluation.zip",
}
DOWNLOAD_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
EXPECTED_COUNTS = {"images_background": (30, 964), "images_evaluation": (20, 659)}
DRAWINGS = 20
PROTOCOLS = ("maml", "vinyals", "lake")
PROTOCOL_DOCS = {
    "maml": "Finn et al. (2017): all 1623 characters shuffled with a fixed seed; 1100 train / 100 dev / 423 test; "
    "each class rotated by a random multiple of 90 degrees in every task.",
    "vinyals": "Vinyals et al. (2016): characters in canonical order (background, then evaluation; alphabets and "
    "characters sorted); first 1028 train, next 172 dev, last 423 test; the four rotations are separate classes.",
    "lake": "Lake et al. (2015): background alphabets for training, split by alphabet into 25 train / 5 dev "
    "alphabets (fixed seed); evaluation alphabets for test; no rotations.",
}
_PROTOCOL_SEED = 20170309  # fixed: protocols must not change with the experiment seed
_PREPROCESS_VERSION = 2  # 2: caches carry a checksum
DRAWING_PIXELS = (105, 105)  # every official Omniglot PNG
MAX_MEMBER_BYTES = 1 << 20  # an official PNG is about 1-2 kB; anything this large is not a drawing (zip bomb guard)
MAX_MEMBERS = 50_000  # the official zips hold 19,280 and 13,180 drawings
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, SyntaxError, NotImplementedError,
                  RuntimeError, Image.DecompressionBombError)  # RuntimeError: an encrypted member; SyntaxError: PIL's broken PNG chunk
_CACHE_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)
_PNG_PATH = re.compile(r"^(images_background|images_evaluation)/([^/]+)/(character\d\d)/(\d{4})_(\d\d)\.png$")


def resolve_data_dir(data: str | Path | None = None, *, download: bool = True) -> Path:
    """The folder that holds the two Omniglot zips.

    Looks at ``data`` (``--data``), then ``$NAS_META_DATA``, then ``<cache>/omniglot`` (downloading the
    official zips there when they are missing and ``download`` is true).

    Raises:
        DataError: the given folder does not exist or lacks a zip; the download failed.
    """
    given = data if data is not None else os.environ.get("NAS_META_DATA") or None
    if given is not None:
        source = "--data" if data is not None else "NAS_META_DATA"
        expanded = home_expanded(given)
        if expanded is None:
            raise DataError(f"{source}={str(given)!r}: {str(given).split('/')[0]!r} is the home of no user on this "
                            "machine.")
        folder = expanded
        if not folder.is_dir():
            raise DataError(f"{source}={str(given)!r} is not a folder; it must hold {_zip_list()}.")
        missing = [f"{n}.zip" for n in ZIP_NAMES if not (folder / f"{n}.zip").is_file()]
        if missing:
            raise DataError(f"{source}={str(given)!r} lacks {', '.join(missing)}; the folder must hold {_zip_list()}.")
        return folder
    folder = Path(default_cache_dir()) / "omniglot"
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise DataError(f"the data cache {folder} cannot be a folder: {blocking} is a file; set NAS_META_CACHE to a "
                        "folder, or give --data DIR.")
    missing_names = [n for n in ZIP_NAMES if not (folder / f"{n}.zip").is_file()]
    if missing_names and not download:
        raise DataError(_offline_message(folder, "downloading is turned off"))
    for name in missing_names:
        download_zip(name, folder)
    return folder


def _zip_list() -> str:
    return " and ".join(f"{n}.zip" for n in ZIP_NAMES)


def _offline_message(folder: Path, reason: str) -> str:
    return (
        f"Omniglot is not available ({reason}). Download {_zip_list()} from "
        f"https://github.com/brendenlake/omniglot/tree/master/python and put them in {folder}, "
        "or point nas-meta at a folder that holds them with --data DIR or NAS_META_DATA=DIR."
    )


def download_zip(
    name: str, folder: Path, *, url: str | None = None, md5: str | None = None, timeout: float = 60.0
) -> Path:
    """Download one official zip into ``folder``, verify its MD5, then move it into place.

    Raises:
        DataError: the download failed or the checksum does not match (nothing is left behind).
    """
    url = url or DOWNLOAD_URLS[name]
    md5 = md5 or DOWNLOAD_MD5[name]
    target = folder / f"{name}.zip"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    except OSError as err:
        raise DataError(f"cannot download Omniglot into {folder}: {err.strerror or err}; set NAS_META_CACHE to a "
                        "writable folder, or give --data a folder that holds the zips.") from None
    os.chmod(tmp, public_mode())
    logger.info("downloading %s to %s", url, target)
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(
                f"{url}: downloaded file has MD5 {digest.hexdigest()}, expected {md5}; the download is "
                f"corrupt or the file changed upstream. Nothing was saved to {target}."
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DataError(_offline_message(folder, f"downloading {url} failed: {err}")) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@dataclass(frozen=True)
class Omniglot:
    """All 1623 characters decoded: ``images[c, d]`` is drawing ``d`` of character ``c`` (uint8 ink, 0..255).

    Characters are in canonical order: background zip first, then evaluation; alphabets and characters sorted.
    """

    images: np.ndarray  # (1623, 20, size, size) uint8
    alphabet_of: np.ndarray  # (1623,) int: index into ``alphabets``
    alphabets: tuple[str, ...]
    characters: tuple[str, ...]  # "Alphabet/characterNN"
    background: int  # the first ``background`` characters come from images_background.zip

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """One raw Omniglot drawing (2-D, bool or 0/1 or 0..255, True/high = background) to ``size``x``size`` uint8 ink."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"an Omniglot image must be 2-D (height, width), but got shape {array.shape}.")
    if array.dtype == bool or array.max() <= 1:
        gray = (array.astype(np.uint8) * 255) if array.dtype == bool or array.max() == 1 else array.astype(np.uint8)
    else:
        gray = array.astype(np.uint8)
    pil = Image.fromarray(gray, mode="L")
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.LANCZOS)
    return 255 - np.asarray(pil, dtype=np.uint8)


def _decode_png(data: bytes, size: int) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ValueError("it is not a PNG image") from None
    with img:
        if img.size != DRAWING_PIXELS:  # checked before decoding: a huge image is refused, not decompressed
            raise ValueError(f"it is {img.size[0]}x{img.size[1]} pixels, not an Omniglot drawing "
                             f"({DRAWING_PIXELS[0]}x{DRAWING_PIXELS[1]})")
        gray = img.convert("L")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.LANCZOS)
    return 255 - np.asarray(gray, dtype=np.uint8)


def _read_zip(path: Path, name: str) -> dict[tuple[str, str], list[tuple[int, str]]]:
    """Validate one zip's layout and counts; return {(alphabet, character): [(drawing number, entry name)]}."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise DataError(f"{path}: is not a valid zip archive ({err}); download it again.") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror}).") from None
    characters: dict[tuple[str, str], list[tuple[int, str]]] = {}
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise DataError(f"{path}: holds {len(members)} entries, far more than the official {name}.zip; "
                            "download it again.")
        for member in members:
            entry = member.filename
            if entry.endswith("/"):
                continue
            if member.file_size > MAX_MEMBER_BYTES:
                raise DataError(f"{path}: entry {entry!r} unpacks to {member.file_size} bytes, not an Omniglot "
                                f"drawing (at most {MAX_MEMBER_BYTES}); download the zip again.")
            match = _PNG_PATH.match(entry)
            if match is None or match.group(1) != name:
                raise DataError(
                    f"{path}: unexpected entry {entry!r}; the official layout is "
                    f"{name}/<Alphabet>/character<NN>/<id>_<NN>.png."
                )
            characters.setdefault((match.group(2), match.group(3)), []).append((int(match.group(5)), entry))
    alphabets = {a for a, _ in characters}
    want_alphabets, want_characters = EXPECTED_COUNTS[name]
    if (len(alphabets), len(characters)) != (want_alphabets, want_characters):
        raise DataError(
            f"{path}: holds {len(alphabets)} alphabets and {len(characters)} characters, but the official "
            f"{name}.zip has {want_alphabets} alphabets and {want_characters} characters."
        )
    for (alphabet, character), drawings in characters.items():
        numbers = sorted(n for n, _ in drawings)
        if numbers != list(range(1, DRAWINGS + 1)):
            raise DataError(
                f"{path}: {name}/{alphabet}/{character} has drawings {numbers}, expected exactly 1..{DRAWINGS}."
            )
    return characters


def _content_key(folder: Path) -> str:
    digest = hashlib.sha256(f"v{_PREPROCESS_VERSION}".encode())
    for name in ZIP_NAMES:
        try:
            with open(folder / f"{name}.zip", "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
        except OSError as err:
            raise DataError(f"{folder / f'{name}.zip'} cannot be read: {err.strerror or err}.") from None
    return digest.hexdigest()[:20]


def _cache_candidates(folder: Path) -> list[Path]:
    return [folder / ".nas-meta-cache", Path(default_cache_dir()) / "decoded"]


def load_omniglot(
    data: str | Path | None = None, image_size: int = 28, *, progress: Callable[[int, int], None] | None = None
) -> Omniglot:
    """Load all of Omniglot at ``image_size``, decoding the PNGs only the first time.

    The decoded arrays are cached next to the data (or under the user cache dir when that folder is
    read-only), keyed by the zips' content, written to a temporary name and then renamed.

    Args:
        data: folder with the zips (see :func:`resolve_data_dir`).
        image_size: side of the square images after resizing.
        progress: called as ``progress(done, total)`` while decoding.

    Raises:
        DataError: missing, corrupt or wrongly laid out data.
    """
    folder = resolve_data_dir(data)
    key = _content_key(folder)
    filename = f"omniglot-{image_size}px-{key}.npz"
    for cache in _cache_candidates(folder):
        if (cache / filename).is_file():
            try:
                return _load_cache(cache / filename, image_size)
            except _CACHE_ERRORS as err:
                reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
                logger.warning("the decoded cache %s is damaged (%s); decoding the zips again to rebuild it",
                               cache / filename, reason)
    dataset = _decode(folder, image_size, progress)
    for cache in _cache_candidates(folder):
        try:
            _save_cache(dataset, cache / filename)
            logger.info("cached decoded Omniglot at %s", cache / filename)
            break
        except OSError:
            continue
    return dataset


def _decode(folder: Path, size: int, progress: Callable[[int, int], None] | None) -> Omniglot:
    layouts = {name: _read_zip(folder / f"{name}.zip", name) for name in ZIP_NAMES}
    total = sum(len(chars) for chars in layouts.values()) * DRAWINGS
    images = np.empty((total // DRAWINGS, DRAWINGS, size, size), dtype=np.uint8)
    alphabets: list[str] = []
    alphabet_of: list[int] = []
    characters: list[str] = []
    done = 0
    for name in ZIP_NAMES:
        path = folder / f"{name}.zip"
        with zipfile.ZipFile(path) as archive:
            for alphabet, character in sorted(layouts[name]):
                if not alphabets or alphabets[-1] != alphabet:
                    alphabets.append(alphabet)
                c = len(characters)
                characters.append(f"{alphabet}/{character}")
                alphabet_of.append(len(alphabets) - 1)
                for number, entry in sorted(layouts[name][(alphabet, character)]):
                    try:
                        images[c, number - 1] = _decode_png(archive.read(entry), size)
                    except _MEMBER_ERRORS as err:
                        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
                        raise DataError(f"{path}: entry {entry!r} is corrupt ({reason}); download the zip again.") from None
                done += DRAWINGS
                if progress is not None:
                    progress(done, total)
    return Omniglot(images, np.asarray(alphabet_of), tuple(alphabets), tuple(characters), len(layouts[ZIP_NAMES[0]]))


def _save_cache(dataset: Omniglot, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".omniglot.", suffix=".npz.part", dir=path.parent)
    os.chmod(tmp, public_mode())
    try:
        with os.fdopen(fd, "wb") as f:
            arrays: dict[str, Any] = _cache_arrays(dataset)
            np.savez(f, **arrays, checksum=np.asarray(_checksum(arrays)))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cache_arrays(dataset: Omniglot) -> dict[str, np.ndarray]:
    return {"images": dataset.images, "alphabet_of": dataset.alphabet_of, "alphabets": np.asarray(dataset.alphabets),
            "characters": np.asarray(dataset.characters), "background": np.asarray(dataset.background)}


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def _load_cache(path: Path, image_size: int) -> Omniglot:
    """Read a decoded cache, verifying its checksum and its shapes.

    Raises:
        ValueError: the checksum does not match (a flipped bit, a partial write), or the content is not all of
            Omniglot at ``image_size`` (a cache copied under another name); other errors of a damaged file.
    """
    with np.load(path, allow_pickle=False) as z:
        arrays = {name: z[name] for name in ("images", "alphabet_of", "alphabets", "characters", "background")}
        if str(z["checksum"]) != _checksum(arrays):
            raise ValueError("its checksum does not match its content")
    characters = sum(counts[1] for counts in EXPECTED_COUNTS.values())
    if arrays["images"].shape != (characters, DRAWINGS, image_size, image_size) or len(arrays["alphabet_of"]) != characters:
        raise ValueError(f"it holds images of shape {arrays['images'].shape}, not Omniglot at {image_size} px")
    return Omniglot(arrays["images"], arrays["alphabet_of"], tuple(str(a) for a in arrays["alphabets"]),
                    tuple(str(c) for c in arrays["characters"]), int(arrays["background"]))


@dataclass(frozen=True)
class ClassSet:
    """The classes of one split: class ``i`` is character ``characters[i]`` turned ``rotations[i]`` quarter turns.

    With ``random_rotation`` the fixed rotation is replaced in every task by a random multiple of 90°.
    ``alphabets`` (each class's alphabet index) lets episodes be drawn within one alphabet (``task.within_alphabet``).
    """

    characters: np.ndarray
    rotations: np.ndarray
    random_rotation: bool
    alphabets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.characters)

    @property
    def label_space(self) -> int:
        """Distinct (character, rotation) labels, the head size of multi-task pre-training."""
        return len(self) * 4 if self.random_rotation else len(self)


SPLITS = ("train", "dev", "test")


def class_splits(protocol: str, dataset: Omniglot, train_rotations: bool | None = None) -> dict[str, ClassSet]:
    """The train/dev/test classes of ``protocol`` (one of :data:`PROTOCOLS`).

    ``train_rotations`` (``data.train_rotations``) overrides whether the training classes are turned by a random
    multiple of 90 degrees in every task; ``None`` keeps the protocol's rule.

    Raises:
        ConfigError: unknown protocol, or random rotations asked of the ``vinyals`` protocol (its rotations are
            classes already).
    """
    splits = split_characters(protocol, dataset.alphabet_of, dataset.background)
    if train_rotations is None or train_rotations == splits["train"].random_rotation:
        return splits
    if np.any(splits["train"].rotations):
        raise ConfigError(f"data.train_rotations={train_rotations} cannot be used with the {protocol!r} protocol: "
                          "its four rotations are separate classes already; leave it unset (null).")
    return {**splits, "train": replace(splits["train"], random_rotation=train_rotations)}


def split_characters(protocol: str, alphabet_of: np.ndarray, background: int) -> dict[str, ClassSet]:
    """:func:`class_splits` from the character listing alone: each character's alphabet index, in canonical
    order, and how many characters come from the background zip (what ``data info`` reads without decoding).

    Raises:
        ConfigError: unknown protocol.
    """
    n = len(alphabet_of)
    if protocol == "maml":
        order = np.random.default_rng(_PROTOCOL_SEED).permutation(n)
        parts = (order[:1100], order[1100:1200], order[1200:])
        return {s: ClassSet(np.sort(p), np.zeros(len(p), dtype=np.int64), True, alphabet_of[np.sort(p)])
                for s, p in zip(SPLITS, parts)}
    if protocol == "vinyals":
        order = np.arange(n)
        parts = (order[:1028], order[1028:1200], order[1200:])
        return {
            s: ClassSet(np.repeat(p, 4), np.tile(np.arange(4), len(p)), False, np.repeat(alphabet_of[p], 4))
            for s, p in zip(SPLITS, parts)
        }
    if protocol == "lake":
        background_alphabets = np.unique(alphabet_of[:background])
        shuffled = np.random.default_rng(_PROTOCOL_SEED).permutation(background_alphabets)
        dev_alphabets = shuffled[25:]
        in_background = np.arange(n) < background
        is_dev = np.isin(alphabet_of, dev_alphabets) & in_background
        parts = (np.flatnonzero(in_background & ~is_dev), np.flatnonzero(is_dev), np.flatnonzero(~in_background))
        return {s: ClassSet(p, np.zeros(len(p), dtype=np.int64), False, alphabet_of[p]) for s, p in zip(SPLITS, parts)}
    raise ConfigError(f"data.protocol={protocol!r} is not one of {sorted(PROTOCOLS)}.")


def largest_alphabet(classes: ClassSet) -> int:
    """The classes of the split's largest alphabet: the most ways a within-alphabet episode can have."""
    return int(np.unique(classes.alphabets, return_counts=True)[1].max()) if classes.alphabets is not None else 0


def data_info(data: str | Path | None = None) -> dict[str, object]:
    """Counts per zip and per protocol split (for ``nas-meta data info``); reads the zips' listings only."""
    folder = resolve_data_dir(data)
    zips: dict[str, object] = {}
    n_background = 0
    alphabet_of: list[int] = []
    alphabet_names: list[str] = []
    for name in ZIP_NAMES:
        layout = _read_zip(folder / f"{name}.zip", name)
        alphabets = sorted({a for a, _ in layout})
        zips[name] = {"alphabets": len(alphabets), "characters": len(layout), "images": len(layout) * DRAWINGS}
        for alphabet, _ in sorted(layout):
            if not alphabet_names or alphabet_names[-1] != alphabet:
                alphabet_names.append(alphabet)
            alphabet_of.append(len(alphabet_names) - 1)
        if name == ZIP_NAMES[0]:
            n_background = len(layout)
    protocols = {}
    for protocol in PROTOCOLS:
        splits = split_characters(protocol, np.asarray(alphabet_of), n_background)
        protocols[protocol] = {
            "description": PROTOCOL_DOCS[protocol],
            **{s: {"characters": len(np.unique(c.characters)), "classes": len(c),
                   "largest_alphabet": largest_alphabet(c)} for s, c in splits.items()},
        }
    return {"data": str(folder), "zips": zips, "protocols": protocols}


def dumps(info: dict[str, object]) -> str:
    """Pretty JSON for the CLI."""
    return json.dumps(info, indent=2)
