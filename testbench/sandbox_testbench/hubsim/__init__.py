"""Local Hugging Face Hub emulator speaking the Space API, so the operator can be tested offline.

Point `HfApi(endpoint=HubSimServer(...).url)` at it; drive it through `HubSimAdmin`.
"""

from .admin import HubSimAdmin, HubSimAdminError
from .config import HubSimConfig
from .constants import HARDWARE_CATALOG
from .faults import ROUTE_NAMES
from .server import HubSimServer, create_app, serve

__all__ = [
    "HARDWARE_CATALOG",
    "ROUTE_NAMES",
    "HubSimAdmin",
    "HubSimAdminError",
    "HubSimConfig",
    "HubSimServer",
    "create_app",
    "serve",
]
