"""Provision a TLS-secured, persistent CNCF distribution registry on Kubernetes."""

from .config import DEFAULT_CONFIG, Settings, load_settings
from .errors import (
    ClusterUnreachable,
    ConfigError,
    PreflightError,
    ProvisionError,
    ReadFailed,
    ReadinessTimeout,
    RegistryError,
)

__all__ = [
    "DEFAULT_CONFIG",
    "ClusterUnreachable",
    "ConfigError",
    "PreflightError",
    "ProvisionError",
    "ReadFailed",
    "ReadinessTimeout",
    "RegistryError",
    "Settings",
    "load_settings",
]
