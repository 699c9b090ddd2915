"""``python -m nas_meta``: the ``nas-meta`` command."""

from .cli import run

run()
