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

# The k3s lane's only input from outside the repository: the k3s source tree. It is
# copied into the build cache and never changed in place. Without it the lane is not run.
K3S_SOURCE = Path(
    os.environ.get(
        "LOCAL_CLUSTER_K3S_SOURCE", REPO_ROOT.parent / "shared" / "k3s" / "k3s-v1.34.3-k3s1"
    )
)
# Which cluster `cluster.up` last started here: "k3s" for the k3s lane, else absent.
FLAVOR_FILE = STATE_DIR / "flavor"
