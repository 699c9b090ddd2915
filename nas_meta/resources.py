"""The study files, search spaces and baseline configs that ship with nas-meta, found by name.

The repository's top-level ``studies/`` and ``search_spaces/`` folders are the source of truth; a wheel carries
copies of them in ``nas_meta/_shipped/`` (made by the build, see ``setup.py``). From a clone or an editable
install the top-level folders are read directly.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import ConfigError

SHIPPED_FOLDERS = ("studies", "search_spaces")


def shipped_root() -> Path:
    """The folder holding ``studies/`` and ``search_spaces/``: the wheel's ``_shipped``, else the repository."""
    packaged = Path(str(files("nas_meta"))) / "_shipped"
    return packaged if (packaged / "studies").is_dir() else Path(__file__).resolve().parents[1]


def shipped_baselines() -> Path:
    """``studies/baselines/``: the paper-settings MAML and Reptile configs (``<name>-<W>w<S>s.yaml``)."""
    return shipped_root() / "studies" / "baselines"


def shipped_studies() -> dict[str, Path]:
    """The shipped study files by name (``smoke``, ``omniglot-5w1s``, …)."""
    return {p.stem: p for p in sorted((shipped_root() / "studies").glob("*.yaml"))}


def shipped_spaces() -> dict[str, Path]:
    """The shipped search spaces by name (``conv``, ``lr-init``, …)."""
    return {p.stem: p for p in sorted((shipped_root() / "search_spaces").glob("*.yaml"))}


def study_file(study: str | Path) -> Path:
    """A study file given as a path, or the name of a shipped study (``smoke``, ``omniglot-5w1s``).

    Raises:
        ConfigError: neither a file nor a shipped study's name (the message lists the shipped ones).
    """
    path = Path(study)
    if path.is_file() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path  # a path: reading it reports a missing file with its name
    shipped = shipped_studies()
    if str(study) in shipped:
        return shipped[str(study)]
    raise ConfigError(f"study {str(study)!r} is neither a study file nor a shipped study; shipped studies: "
                      f"{sorted(shipped)} (nas-meta studies lists them).")
