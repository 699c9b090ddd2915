"""optuna-dashboard on a study storage, read-only: serving a study never changes its storage.

The report's figures reach the dashboard from the search itself (kept current while it runs, see
``api.run_search``), so the dashboard has nothing to write. A journal file is opened read-only: it can be
served from a folder nas-meta may not write, and any write the dashboard's page asks for is refused.
"""

from __future__ import annotations

import logging

from .errors import ConfigError
from .storage import open_storage

logger = logging.getLogger(__name__)


def run_dashboard(storage: str, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard for ``storage`` until interrupted.

    Raises:
        ConfigError: optuna-dashboard is not installed, or the storage URL is invalid.
        StorageError: the storage cannot be opened (a missing journal file included).
    """
    try:
        import optuna_dashboard
    except ImportError:
        raise ConfigError("the dashboard needs optuna-dashboard: pip install 'nas-meta[dashboard]'.") from None
    handle = open_storage(storage, read_only=True)
    logger.info("optuna-dashboard on http://%s:%d for %s (read-only)", host, port, handle.url)
    try:
        optuna_dashboard.run_server(handle.storage, host=host, port=port)
    except OSError as err:  # the address cannot be resolved, or the port is taken
        raise ConfigError(f"--host {host!r} --port {port}: cannot listen there ({err.strerror or err}).") from None
