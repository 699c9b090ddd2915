"""Omniglot reading, validation, caching, download and protocol splits."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import os
import re
import shutil
import struct
import threading
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas_meta import data
from nas_meta.config import PROTOCOL_CLASSES, PROTOCOL_LARGEST_ALPHABET
from nas_meta.errors import ConfigError, DataError
from tests.conftest import snapshot


def test_preprocess_inverts_and_resizes() -> None:
    raw = np.ones((105, 105), dtype=bool)  # all background
    raw[40:60, 10:95] = False  # a thick ink bar
    out = data.preprocess(raw, 28)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[14, 14] == 255 and out[0, 0] == 0  # ink = 1 (255), background = 0
    assert 0 < out[10, 14] < 255 or 0 < out[16, 14] < 255 or np.any((out > 0) & (out < 255))  # anti-aliased edges


def test_missing_folder_and_missing_zip(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        data.resolve_data_dir(tmp_path / "nope")
    assert "--data=" in str(info.value) and "is not a folder" in str(info.value)
    (tmp_path / "images_background.zip").write_bytes(b"")
    with pytest.raises(DataError, match=r"lacks images_evaluation.zip"):
        data.resolve_data_dir(tmp_path)


def test_offline_without_data_says_what_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAS_META_DATA", raising=False)
    monkeypatch.setenv("NAS_META_CACHE", str(tmp_path))
    with pytest.raises(DataError) as info:
        data.resolve_data_dir(None, download=False)
    message = str(info.value)
    assert "images_background.zip and images_evaluation.zip" in message
    assert str(tmp_path / "omniglot") in message and "--data DIR" in message


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, payload in entries.items():
            z.writestr(name, payload)
    return buf.getvalue()


@pytest.mark.slow
def test_not_a_zip_and_truncated_zip_name_the_file(tmp_path: Path, omniglot: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "images_background.zip").write_bytes(b"this is not a zip")
    (bad / "images_evaluation.zip").write_bytes((omniglot / "images_evaluation.zip").read_bytes()[:100_000])
    with pytest.raises(DataError) as info:
        data.load_omniglot(bad)
    assert str(bad / "images_background.zip") in str(info.value) and "not a valid zip" in str(info.value)
    (bad / "images_background.zip").write_bytes((omniglot / "images_background.zip").read_bytes())
    with pytest.raises(DataError) as info:
        data.load_omniglot(bad)
    assert str(bad / "images_evaluation.zip") in str(info.value)
    assert not list((bad / ".nas-meta-cache").glob("*.npz")) if (bad / ".nas-meta-cache").exists() else True


def test_wrong_layout_names_the_entry(tmp_path: Path) -> None:
    folder = tmp_path / "layout"
    folder.mkdir()
    (folder / "images_background.zip").write_bytes(_zip({"images_background/Latin/a.png": b"x"}))
    (folder / "images_evaluation.zip").write_bytes(_zip({}))
    with pytest.raises(DataError) as info:
        data.load_omniglot(folder)
    assert "unexpected entry 'images_background/Latin/a.png'" in str(info.value)
    assert "images_background/<Alphabet>/character<NN>/<id>_<NN>.png" in str(info.value)


def test_wrong_counts_are_reported(tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("1", (105, 105), 1).save(png, "PNG")
    entries = {f"images_background/Latin/character01/0001_{i:02d}.png": png.getvalue() for i in range(1, 21)}
    folder = tmp_path / "counts"
    folder.mkdir()
    (folder / "images_background.zip").write_bytes(_zip(entries))
    (folder / "images_evaluation.zip").write_bytes(_zip({}))
    with pytest.raises(DataError, match="holds 1 alphabets and 1 characters, but the official images_background.zip "
                                        "has 30 alphabets and 964 characters"):
        data.load_omniglot(folder)


class _Server:
    def __init__(self, payload: bytes) -> None:
        body = payload

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/images_background.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


def test_download_verifies_md5_and_leaves_nothing_on_mismatch(tmp_path: Path) -> None:
    payload = b"PK fake zip bytes" * 100
    server = _Server(payload)
    try:
        with pytest.raises(DataError) as info:
            data.download_zip("images_background", tmp_path, url=server.url, md5="0" * 32)
        assert "expected 00000000000000000000000000000000" in str(info.value)
        assert list(tmp_path.iterdir()) == []
        target = data.download_zip("images_background", tmp_path, url=server.url, md5=hashlib.md5(payload).hexdigest())
        assert target.read_bytes() == payload and [p.name for p in tmp_path.iterdir()] == ["images_background.zip"]
    finally:
        server.close()


def test_download_failure_gives_the_offline_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        data.download_zip("images_background", tmp_path, url="http://127.0.0.1:9/none.zip", timeout=2)
    assert "downloading http://127.0.0.1:9/none.zip failed" in str(info.value)
    assert "Download images_background.zip and images_evaluation.zip" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_real_omniglot_counts_and_protocols(omniglot: Path) -> None:
    info = data.data_info(omniglot)
    assert info["zips"] == {
        "images_background": {"alphabets": 30, "characters": 964, "images": 19280},
        "images_evaluation": {"alphabets": 20, "characters": 659, "images": 13180},
    }
    protocols = info["protocols"]
    assert [protocols["maml"][s]["characters"] for s in data.SPLITS] == [1100, 100, 423]
    assert [protocols["vinyals"][s]["classes"] for s in data.SPLITS] == [4112, 688, 1692]
    counts = {p: {s: protocols[p][s]["classes"] for s in data.SPLITS} for p in data.PROTOCOLS}
    assert counts == PROTOCOL_CLASSES  # the table study files are validated against, without loading data
    largest = {p: {s: protocols[p][s]["largest_alphabet"] for s in data.SPLITS} for p in data.PROTOCOLS}
    assert largest == PROTOCOL_LARGEST_ALPHABET  # likewise for within-alphabet episodes
    assert largest["lake"]["test"] == 47  # Malayalam, the largest evaluation alphabet
    assert protocols["lake"]["test"]["characters"] == 659
    assert protocols["lake"]["train"]["characters"] + protocols["lake"]["dev"]["characters"] == 964


@pytest.mark.slow
def test_real_omniglot_loads_from_cache_and_splits_are_disjoint(omniglot: Path) -> None:
    dataset = data.load_omniglot(omniglot, 28)
    start = time.perf_counter()
    again = data.load_omniglot(omniglot, 28)
    assert time.perf_counter() - start < 1.0
    assert np.array_equal(dataset.images, again.images)
    assert dataset.images.shape == (1623, 20, 28, 28)
    # ink = 1: a drawing is mostly background (0) with some ink
    assert 0.02 < float((dataset.images > 127).mean()) < 0.3
    for protocol in data.PROTOCOLS:
        splits = data.class_splits(protocol, dataset)
        chars = [set(splits[s].characters.tolist()) for s in data.SPLITS]
        assert not (chars[0] & chars[1]) and not (chars[0] & chars[2]) and not (chars[1] & chars[2])
        assert len(chars[0] | chars[1] | chars[2]) == 1623
    lake = data.class_splits("lake", dataset)
    alphabets = [set(dataset.alphabet_of[lake[s].characters].tolist()) for s in data.SPLITS]
    assert len(alphabets[0]) == 25 and len(alphabets[1]) == 5 and not alphabets[0] & alphabets[1]
    # Lake's one-shot task: 20-way episodes within one evaluation alphabet, all of which can hold them
    import torch

    from nas_meta.episodes import EpisodeSampler

    sampler = EpisodeSampler(torch.from_numpy(dataset.images), lake["test"], 20, 1, 1, within_alphabet=True)
    index = sampler.fixed(300, seed=0).index
    characters = lake["test"].characters[index.classes.numpy()]
    per_task = dataset.alphabet_of[characters]
    assert (per_task == per_task[:, :1]).all() and len(set(per_task[:, 0].tolist())) == 20
    assert all(dataset.alphabet_of[c] >= 30 for c in characters.flatten())  # evaluation alphabets only


# -- hostile zips and caches: small synthetic zips in the official layout (fast), copies of the real ones (slow) ----

SMALL = {"images_background": [("Alpha", 1), ("Alpha", 2), ("Beta", 1)],  # 2 alphabets, 3 characters
         "images_evaluation": [("Gamma", 1), ("Gamma", 2)]}  # 1 alphabet, 2 characters
FIRST = "images_background/Alpha/character01/0001_01.png"  # the first drawing decoded


def drawing_png(seed: int, size: tuple[int, int] = (105, 105), mode: str = "1") -> bytes:
    """A 1-bit PNG like Omniglot's: True = background, some ink."""
    ink = np.random.default_rng(seed).random(size[::-1]) > 0.2
    buffer = io.BytesIO()
    Image.fromarray(ink).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def png_broken_chunk() -> bytes:
    """A drawing whose image data chunk claims half its length: PIL then reads a chunk header from compressed data
    (it raises SyntaxError, not OSError)."""
    data = bytearray(drawing_png(1))
    at = data.find(b"IDAT") - 4
    length = struct.unpack(">I", data[at:at + 4])[0]
    data[at:at + 4] = struct.pack(">I", length // 2)
    return bytes(data)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with almost no data behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


def small_entries(name: str) -> dict[str, bytes]:
    entries, seed = {}, 0
    for number, (alphabet, character) in enumerate(SMALL[name], start=1 if name == data.ZIP_NAMES[0] else 4):
        for drawing in range(1, 21):
            seed += 1
            entries[f"{name}/{alphabet}/character{character:02d}/{number:04d}_{drawing:02d}.png"] = drawing_png(seed)
    return entries


def write_zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, payload in entries.items():
            z.writestr(name, payload)
    return path


@pytest.fixture()
def small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder with two tiny zips in the official layout; the expected counts patched to theirs."""
    monkeypatch.setitem(data.EXPECTED_COUNTS, "images_background", (2, 3))
    monkeypatch.setitem(data.EXPECTED_COUNTS, "images_evaluation", (1, 2))
    monkeypatch.setenv("NAS_META_CACHE", str(tmp_path / "user-cache"))
    folder = tmp_path / "omniglot"
    folder.mkdir()
    for name in data.ZIP_NAMES:
        write_zip(folder / f"{name}.zip", small_entries(name))
    return folder




def refused_data(folder: Path, size: int = 8) -> str:
    """The one-line DataError loading ``folder`` gives, quickly; nothing under ``folder`` is written or changed."""
    before = snapshot(folder)
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        data.load_omniglot(folder, size)
    assert time.perf_counter() - start < 3.0
    message = str(info.value)
    assert "\n" not in message and snapshot(folder) == before
    return message


def member_data_offset(path: Path, entry: str) -> tuple[int, zipfile.ZipInfo]:
    """Where the stored (compressed) bytes of ``entry`` start in the zip file."""
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(entry)
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + name_length + extra_length, info


def edit_member(path: Path, entry: str, edit: Callable[[bytearray, int, zipfile.ZipInfo], None]) -> None:
    raw = bytearray(path.read_bytes())
    start, info = member_data_offset(path, entry)
    edit(raw, start, info)
    path.write_bytes(bytes(raw))


def flip(offset: Callable[[zipfile.ZipInfo], int], length: int = 16) -> Callable[[bytearray, int, zipfile.ZipInfo], None]:
    def edit(raw: bytearray, start: int, info: zipfile.ZipInfo) -> None:
        for i in range(start + offset(info), start + offset(info) + length):
            raw[i] ^= 0xFF
    return edit


def corrupt(zip_path: Path, entry: str, reason: str) -> str:
    return re.escape(f"{zip_path}: entry {entry!r} is corrupt (") + reason + re.escape("); download the zip again.")


BAD_CRC_OR_ZLIB = (r"(Bad CRC-32 for file '[^']+'|Error -3 while decompressing data: [^)]+"
                   r"|Compressed file ended before the end-of-stream marker was reached)")


@pytest.mark.parametrize(
    ("compression", "offset"),
    [
        pytest.param(zipfile.ZIP_DEFLATED, lambda info: 0, id="deflated-start"),
        pytest.param(zipfile.ZIP_DEFLATED, lambda info: info.compress_size // 2, id="deflated-middle"),
        pytest.param(zipfile.ZIP_DEFLATED, lambda info: info.compress_size - 16, id="deflated-end"),
        pytest.param(zipfile.ZIP_STORED, lambda info: info.compress_size // 2, id="stored-middle"),
    ],
)
def test_a_corrupted_member_is_named_with_its_zip(small: Path, compression: int,
                                                  offset: Callable[[zipfile.ZipInfo], int]) -> None:
    zip_path = write_zip(small / "images_background.zip", small_entries("images_background"), compression)
    edit_member(zip_path, FIRST, flip(offset))
    message = refused_data(small)
    assert re.fullmatch(corrupt(zip_path, FIRST, BAD_CRC_OR_ZLIB), message), message
    assert not (small / ".nas-meta-cache").exists()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(drawing_png(1, (50, 50)), re.escape("it is 50x50 pixels, not an Omniglot drawing (105x105)"),
                     id="png-of-the-wrong-size"),
        pytest.param(drawing_png(1, (105, 104)), re.escape("it is 105x104 pixels, not an Omniglot drawing (105x105)"),
                     id="png-one-pixel-short"),
        pytest.param(png_header_only(12_000, 12_000), re.escape("it is 12000x12000 pixels, not an Omniglot drawing "
                                                                "(105x105)"), id="png-claiming-144-megapixels"),
        pytest.param(png_header_only(60_000, 60_000), r"Image size \(3600000000 pixels\) exceeds limit .*",
                     id="png-decompression-bomb"),
        pytest.param(b"hello, not a png", r"it is not a PNG image", id="not-a-png"),
        pytest.param(b"", r"it is not a PNG image", id="empty-member"),
        pytest.param(drawing_png(1)[:120], re.escape("image file is truncated"), id="truncated-png"),
        pytest.param(png_broken_chunk(), r"broken PNG file.*", id="png-with-a-broken-chunk"),  # PIL's SyntaxError
    ],
)
def test_a_member_that_is_no_drawing_is_named(small: Path, payload: bytes, reason: str) -> None:
    entries = small_entries("images_background")
    entries[FIRST] = payload
    zip_path = write_zip(small / "images_background.zip", entries)
    with warnings.catch_warnings():  # PIL warns about a 144-megapixel header before nas-meta refuses it
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        message = refused_data(small)
    assert re.fullmatch(corrupt(zip_path, FIRST, reason), message), message


def test_a_member_unpacking_to_more_than_a_mebibyte_is_refused_unread(small: Path) -> None:
    entries = small_entries("images_background")
    entries[FIRST] = b"\x00" * (2 << 20)  # 2 MiB of zeros: a few kB compressed
    zip_path = write_zip(small / "images_background.zip", entries)
    assert zip_path.stat().st_size < 200_000
    assert refused_data(small) == (f"{zip_path}: entry {FIRST!r} unpacks to 2097152 bytes, not an Omniglot drawing "
                                   "(at most 1048576); download the zip again.")


def _claim_size(size: int) -> Callable[[Path], None]:
    def edit(zip_path: Path) -> None:
        raw = bytearray(zip_path.read_bytes())
        central = raw.find(b"PK\x01\x02")  # the first central directory record is FIRST's
        raw[central + 24:central + 28] = struct.pack("<I", size)
        zip_path.write_bytes(bytes(raw))
    return edit


def test_a_member_whose_header_claims_a_huge_size_is_refused(small: Path) -> None:
    zip_path = small / "images_background.zip"
    _claim_size(5 << 20)(zip_path)
    assert refused_data(small) == (f"{zip_path}: entry {FIRST!r} unpacks to 5242880 bytes, not an Omniglot drawing "
                                   "(at most 1048576); download the zip again.")


def test_a_member_that_unpacks_to_more_than_its_header_claims_is_cut_and_refused(small: Path) -> None:
    entries = small_entries("images_background")
    entries[FIRST] = b"\x00" * (2 << 20)
    zip_path = write_zip(small / "images_background.zip", entries)
    raw = bytearray(zip_path.read_bytes())
    raw[22:26] = struct.pack("<I", 1000)  # the local header
    zip_path.write_bytes(bytes(raw))
    _claim_size(1000)(zip_path)  # and the central directory claim 1000 bytes
    message = refused_data(small)
    assert re.fullmatch(corrupt(zip_path, FIRST, BAD_CRC_OR_ZLIB), message), message


def test_an_unsupported_compression_method_is_named(small: Path) -> None:
    zip_path = small / "images_background.zip"
    raw = bytearray(zip_path.read_bytes())
    raw[8] = 99  # the local header's method
    raw[raw.find(b"PK\x01\x02") + 10] = 99  # and the central directory's
    zip_path.write_bytes(bytes(raw))
    assert re.fullmatch(corrupt(zip_path, FIRST, re.escape("That compression method is not supported")),
                        refused_data(small))


def test_an_encrypted_member_is_named(small: Path) -> None:
    zip_path = small / "images_background.zip"
    raw = bytearray(zip_path.read_bytes())
    raw[6] |= 1  # "encrypted" in the local header's flags
    raw[raw.find(b"PK\x01\x02") + 8] |= 1  # and in the central directory's
    zip_path.write_bytes(bytes(raw))
    assert re.fullmatch(corrupt(zip_path, FIRST, r".*encrypted.*"), refused_data(small))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(lambda e: e.update({"images_background/README.txt": b"hi"}),
                     "{zip}: unexpected entry 'images_background/README.txt'; the official layout is "
                     "images_background/<Alphabet>/character<NN>/<id>_<NN>.png.", id="extra-file"),
        pytest.param(lambda e: e.update({"images_background/../evil.png": b"x"}),
                     "{zip}: unexpected entry 'images_background/../evil.png'; the official layout is "
                     "images_background/<Alphabet>/character<NN>/<id>_<NN>.png.", id="path-traversal"),
        pytest.param(lambda e: e.update({"images_evaluation/Gamma/character01/0009_01.png": b"x"}),
                     "{zip}: unexpected entry 'images_evaluation/Gamma/character01/0009_01.png'; the official layout "
                     "is images_background/<Alphabet>/character<NN>/<id>_<NN>.png.", id="entry-of-the-other-zip"),
        pytest.param(lambda e: e.pop(FIRST),
                     "{zip}: images_background/Alpha/character01 has drawings [" + ", ".join(map(str, range(2, 21)))
                     + "], expected exactly 1..20.", id="missing-drawing"),
        pytest.param(lambda e: e.update({"images_background/Alpha/character01/0001_21.png": drawing_png(0)}),
                     "{zip}: images_background/Alpha/character01 has drawings [" + ", ".join(map(str, range(1, 22)))
                     + "], expected exactly 1..20.", id="drawing-21"),
        pytest.param(lambda e: e.update({"images_background/Alpha/character01/0099_01.png": drawing_png(0)}),
                     "{zip}: images_background/Alpha/character01 has drawings [1, 1, " + ", ".join(map(str, range(2, 21)))
                     + "], expected exactly 1..20.", id="duplicate-drawing"),
        pytest.param(lambda e: e.update({"images_background/Delta/character01/0010_01.png": drawing_png(0)}),
                     "{zip}: holds 3 alphabets and 4 characters, but the official images_background.zip has 2 "
                     "alphabets and 3 characters.", id="extra-character"),
    ],
)
def test_a_zip_laid_out_wrongly_names_what_is_wrong(small: Path, edit: Callable[[dict[str, bytes]], object],
                                                    message: str) -> None:
    entries = small_entries("images_background")
    edit(entries)
    zip_path = write_zip(small / "images_background.zip", entries)
    assert refused_data(small) == message.format(zip=zip_path)


def test_a_zip_with_too_many_entries_is_refused_before_reading_them(small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "MAX_MEMBERS", 50)
    zip_path = small / "images_background.zip"
    assert refused_data(small) == (f"{zip_path}: holds 60 entries, far more than the official images_background.zip; "
                                   "download it again.")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b"this is not a zip", id="text"),
        pytest.param(lambda b: b[:-10], id="central-directory-cut"),
    ],
)
def test_a_zip_that_is_no_zip_is_named(small: Path, damage: Callable[[bytes], bytes]) -> None:
    zip_path = small / "images_evaluation.zip"
    zip_path.write_bytes(damage(zip_path.read_bytes()))
    message = refused_data(small)
    assert re.fullmatch(re.escape(f"{zip_path}: is not a valid zip archive (") + r"[^)]+" + re.escape("); download it "
                        "again."), message), message


def test_a_zip_that_is_a_folder_or_a_data_folder_that_is_a_file(small: Path) -> None:
    (small / "images_evaluation.zip").unlink()
    (small / "images_evaluation.zip").mkdir()
    assert refused_data(small) == (f"--data={str(small)!r} lacks images_evaluation.zip; the folder must hold "
                                   "images_background.zip and images_evaluation.zip.")
    not_a_folder = small / "images_background.zip"
    with pytest.raises(DataError) as info:
        data.load_omniglot(not_a_folder)
    assert str(info.value) == (f"--data={str(not_a_folder)!r} is not a folder; it must hold images_background.zip and "
                               "images_evaluation.zip.")


def test_a_data_folder_in_the_home_of_no_user_is_refused_by_name() -> None:
    with pytest.raises(DataError) as info:
        data.load_omniglot("~no-such-user-nas-meta/omniglot")
    assert str(info.value) == ("--data='~no-such-user-nas-meta/omniglot': '~no-such-user-nas-meta' is the home of no "
                               "user on this machine.")


def test_a_download_into_a_folder_that_cannot_be_made_is_refused_naming_it(tmp_path: Path) -> None:
    folder = Path("/proc/nas-meta-test/omniglot")  # /proc takes no new folder, not even root's
    with pytest.raises(DataError) as info:
        data.download_zip("images_background", folder, url=(tmp_path / "never-read.zip").as_uri())
    assert str(info.value).startswith(f"cannot download Omniglot into {folder}: ")
    assert "set NAS_META_CACHE to a writable folder" in str(info.value)


# -- a damaged decoded cache is detected, logged and rebuilt ------------------------------------------------------

class _Exploit:
    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.flag}",))


def _pickle_npz(path: Path) -> None:
    """A cache holding a pickle that would create ``pwned`` beside it if it were ever unpickled."""
    with open(path, "wb") as f:
        np.savez(f, images=np.array([_Exploit(path.parent / "pwned")], dtype=object), checksum=np.asarray("x"))


def _edited_npz(path: Path) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["images"] = arrays["images"].copy()
    arrays["images"][0, 0, 0, 0] ^= 0xFF  # the content changed, the recorded checksum kept
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _without_checksum(path: Path) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "checksum"}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _flip_middle(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), id="truncated"),
        pytest.param(_flip_middle, id="bit-flipped"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
        pytest.param(lambda p: p.write_bytes(b"not an npz"), id="text"),
        pytest.param(_edited_npz, id="content-changed-checksum-kept"),
        pytest.param(_without_checksum, id="checksum-missing"),
        pytest.param(_pickle_npz, id="pickled-objects"),
    ],
)
def test_a_damaged_cache_is_detected_logged_and_rebuilt(small: Path, damage: Callable[[Path], None],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    fresh = data.load_omniglot(small, 8)
    (cache,) = (small / ".nas-meta-cache").glob("omniglot-8px-*.npz")
    zips = {n: (small / f"{n}.zip").read_bytes() for n in data.ZIP_NAMES}
    damage(cache)
    with caplog.at_level(logging.WARNING, logger="nas_meta.data"):
        again = data.load_omniglot(small, 8)
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(logged) == 1 and re.fullmatch(rf"the decoded cache {re.escape(str(cache))} is damaged \(.+\); "
                                             "decoding the zips again to rebuild it", logged[0]), logged
    decoded = data._decode(small, 8, None)  # a fresh decode, no cache involved
    for dataset in (again, data._load_cache(cache, 8)):  # what was returned, and the rebuilt cache
        assert np.array_equal(dataset.images, decoded.images) and np.array_equal(dataset.images, fresh.images)
        assert dataset.characters == decoded.characters and dataset.background == decoded.background == 3
    assert {n: (small / f"{n}.zip").read_bytes() for n in data.ZIP_NAMES} == zips
    assert sorted(p.name for p in (small / ".nas-meta-cache").iterdir()) == [cache.name]  # no temporary left behind


# -- the same on copies of the real zips (slow) -------------------------------------------------------------------

@pytest.mark.slow
def test_a_corrupted_member_of_a_real_zip_is_named(tmp_path: Path, omniglot: Path) -> None:
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in data.ZIP_NAMES:
        shutil.copy(omniglot / f"{name}.zip", folder / f"{name}.zip")
    zip_path = folder / "images_background.zip"
    with zipfile.ZipFile(zip_path) as z:
        first = min(n for n in z.namelist() if n.endswith(".png"))
    edit_member(zip_path, first, flip(lambda info: info.compress_size // 2))
    message = refused_data(folder, 28)
    assert re.fullmatch(corrupt(zip_path, first, BAD_CRC_OR_ZLIB), message), message


@pytest.mark.slow
def test_an_oversized_member_added_to_a_real_zip_is_refused(tmp_path: Path, omniglot: Path) -> None:
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in data.ZIP_NAMES:
        shutil.copy(omniglot / f"{name}.zip", folder / f"{name}.zip")
    zip_path = folder / "images_evaluation.zip"
    entry = "images_evaluation/Angelic/character01/9999_21.png"
    with zipfile.ZipFile(zip_path, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr(entry, b"\x00" * (3 << 20))
    assert refused_data(folder, 28) == (f"{zip_path}: entry {entry!r} unpacks to 3145728 bytes, not an Omniglot "
                                        "drawing (at most 1048576); download the zip again.")


# -- regression: a decoded cache of another image size under this size's name is rebuilt ---------------------------

def test_a_cache_of_another_size_under_this_sizes_name_is_detected_and_rebuilt(
        small: Path, caplog: pytest.LogCaptureFixture) -> None:
    data.load_omniglot(small, 8)
    data.load_omniglot(small, 10)
    (cache8,) = (small / ".nas-meta-cache").glob("omniglot-8px-*.npz")
    cache10 = small / ".nas-meta-cache" / cache8.name.replace("-8px-", "-10px-")
    assert cache10.is_file()
    shutil.copyfile(cache8, cache10)  # a valid cache, checksum and all, but of 8-pixel images
    with caplog.at_level(logging.WARNING, logger="nas_meta.data"):
        dataset = data.load_omniglot(small, 10)
    assert dataset.images.shape == (5, 20, 10, 10)
    assert np.array_equal(dataset.images, data._decode(small, 10, None).images)
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert logged == [f"the decoded cache {cache10} is damaged (it holds images of shape (5, 20, 8, 8), not Omniglot "
                      "at 10 px); decoding the zips again to rebuild it"]
    assert data._load_cache(cache10, 10).images.shape == (5, 20, 10, 10)  # rebuilt at the right size
    assert data._load_cache(cache8, 8).images.shape == (5, 20, 8, 8)  # the other size's cache untouched
    assert sorted(p.name for p in (small / ".nas-meta-cache").iterdir()) == sorted([cache8.name, cache10.name])


@pytest.mark.parametrize("protocol", ["maml", "vinyals", "lake"])
def test_every_protocol_gives_each_class_its_characters_alphabet(protocol: str) -> None:
    alphabet_of = np.repeat(np.arange(50), np.diff(np.linspace(0, 1623, 51).astype(int)))
    splits = data.split_characters(protocol, alphabet_of, background=964)
    for split in splits.values():
        assert split.alphabets is not None
        assert np.array_equal(split.alphabets, alphabet_of[split.characters])


def _listing_only(background: int = 964) -> data.Omniglot:
    """An Omniglot with the real character counts and no images: what class splits read."""
    alphabet_of = np.repeat(np.arange(50), np.diff(np.linspace(0, 1623, 51).astype(int)))
    return data.Omniglot(np.zeros((1623, 20, 1, 1), dtype=np.uint8), alphabet_of,
                         tuple(f"a{i}" for i in range(50)), tuple(f"c{i}" for i in range(1623)), background)


@pytest.mark.parametrize(("protocol", "train_rotations", "expected"),
                         [("lake", None, False), ("lake", True, True), ("lake", False, False), ("maml", None, True),
                          ("maml", False, False), ("maml", True, True), ("vinyals", None, False),
                          ("vinyals", False, False)])
def test_train_rotations_turns_the_training_classes_only(protocol: str, train_rotations: bool | None,
                                                         expected: bool) -> None:
    dataset = _listing_only()
    plain = data.class_splits(protocol, dataset)
    splits = data.class_splits(protocol, dataset, train_rotations)
    assert splits["train"].random_rotation is expected
    assert splits["train"].label_space == len(plain["train"]) * (4 if expected else 1)
    for split in ("dev", "test"):  # dev and test keep the protocol's rule
        assert splits[split].random_rotation is plain[split].random_rotation
        assert np.array_equal(splits[split].characters, plain[split].characters)
        assert np.array_equal(splits[split].rotations, plain[split].rotations)
    assert np.array_equal(splits["train"].characters, plain["train"].characters)


def test_train_rotations_refused_where_rotations_are_classes_already() -> None:
    with pytest.raises(ConfigError, match=r"data.train_rotations=True cannot be used with the 'vinyals' protocol"):
        data.class_splits("vinyals", _listing_only(), True)
