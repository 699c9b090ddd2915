"""Process-wide runtime set-up: device strings and the allocator tuning."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from nas_meta.runtime import resolve_device

_PROBE = (
    "import ctypes, json, torch\n"
    "from nas_meta.runtime import tune_allocator\n"
    "class MallInfo2(ctypes.Structure):\n"
    "    _fields_ = [(n, ctypes.c_size_t) for n in ('arena','ordblks','smblks','hblks','hblkhd','usmblks',"
    "'fsmblks','uordblks','fordblks','keepcost')]\n"
    "libc = ctypes.CDLL('libc.so.6'); libc.mallinfo2.restype = MallInfo2\n"
    "tuned = tune_allocator()\n"
    "x = torch.empty(4 * 2**20 // 4)\n"  # a 4 MiB tensor: above glibc's default mmap threshold
    "print(json.dumps({'tuned': tuned, 'mmapped_blocks': libc.mallinfo2().hblks}))\n"
)


def _probe(env_value: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "NAS_META_TUNE_ALLOCATOR"}
    if env_value is not None:
        env["NAS_META_TUNE_ALLOCATOR"] = env_value
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_tuned_allocator_serves_tensor_sized_blocks_from_the_heap() -> None:
    tuned, untouched = _probe(None), _probe("0")
    assert tuned["tuned"] is True and untouched["tuned"] is False
    # glibc hands a 4 MiB block to mmap by default (one more mmapped block); tuned, it comes from the heap
    assert int(untouched["mmapped_blocks"]) > int(tuned["mmapped_blocks"])  # type: ignore[call-overload]


def test_resolve_device_rejects_unknown_values() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("gpu")


@pytest.mark.parametrize("setting", ["banana", "2", "-1"])
def test_a_bad_allocator_setting_is_named(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    from nas_meta.errors import ConfigError
    from nas_meta.runtime import tune_allocator

    monkeypatch.setenv("NAS_META_TUNE_ALLOCATOR", setting)
    tune_allocator.cache_clear()
    try:
        with pytest.raises(ConfigError) as info:
            tune_allocator()
        assert str(info.value) == (f"NAS_META_TUNE_ALLOCATOR={setting!r} is not allowed: expected 1/0 (or true/false, "
                                   "yes/no, on/off).")
    finally:
        tune_allocator.cache_clear()
