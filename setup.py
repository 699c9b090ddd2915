"""Build hook: the wheel carries the repository's study files and search spaces as package data.

``studies/`` and ``search_spaces/`` at the top of the repository stay the source of truth; the build copies
their YAML files into ``nas_meta/_shipped/`` inside the wheel (read by ``nas_meta.resources``). Everything else
is declared in ``pyproject.toml``.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("studies", "search_spaces")


class BuildWithStudies(build_py):
    def run(self) -> None:
        super().run()
        for folder in SHIPPED:
            for source in sorted((ROOT / folder).rglob("*.yaml")):
                target = Path(self.build_lib) / "nas_meta" / "_shipped" / source.relative_to(ROOT)
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildWithStudies})
