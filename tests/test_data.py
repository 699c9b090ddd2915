"""Omniglot reading, validation, caching, download and protocol splits."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas_meta import data
from nas_meta.config import PROTOCOL_CLASSES
from nas_meta.errors import DataError


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
