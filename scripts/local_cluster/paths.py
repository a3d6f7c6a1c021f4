"""Where the local cluster keeps its build cache and its runtime state."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GO_SOURCES = Path(__file__).resolve().parent / "go"

# Built binaries and images survive `cluster.down`; they are keyed by version.
CACHE_DIR = Path(
    os.environ.get("LOCAL_CLUSTER_CACHE", Path.home() / ".cache" / "registry-local-cluster")
)
# Everything a running cluster writes; `cluster.down` removes all of it.
STATE_DIR = Path(os.environ.get("LOCAL_CLUSTER_STATE", "/var/lib/registry-local-cluster"))
LOG_DIR = STATE_DIR / "logs"
KUBECONFIG = STATE_DIR / "kubeconfig"
# The registry's settings for the local cluster (what `--local` lays over config.yaml).
LOCAL_OVERLAY = Path(__file__).resolve().parent / "registry-config.yaml"
