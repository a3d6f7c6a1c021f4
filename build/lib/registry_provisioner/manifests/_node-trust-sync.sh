#!/bin/sh
# Keeps containerd's directory for the registry ($HOST_CERTS_DIR/$REGISTRY_HOST) in step
# with the registry's CA. containerd rereads hosts.toml and its ca file on every pull, so
# no restart is needed; the files carry no k3s header, so k3s leaves them alone.
set -eu
dest="$HOST_CERTS_DIR/$REGISTRY_HOST"

# Write-then-rename, so containerd never reads half a file.
install_file() {
  if ! cmp -s "$1" "$dest/$2"; then
    cp "$1" "$dest/.$2.tmp"
    mv -f "$dest/.$2.tmp" "$dest/$2"
    echo "updated $dest/$2"
  fi
}

# Stopping means the DaemonSet is going away (unprovision) or being replaced, whose new
# pod writes the files again within seconds: either way, leave nothing stale behind.
trap 'rm -rf "$dest"; exit 0' TERM INT
while :; do
  # Older k3s releases delete certs.d at start; a deleted mount source has no links left,
  # and only a container restart mounts the new directory.
  if [ "$(stat -c %h "$HOST_CERTS_DIR")" -eq 0 ]; then
    echo "$HOST_CERTS_DIR was deleted on the node; restarting to remount it" >&2
    exit 1
  fi
  mkdir -p "$dest"
  if [ -s /registry-tls/ca.crt ]; then
    install_file /registry-tls/ca.crt ca.crt
    install_file /node-trust/hosts.toml hosts.toml
  else
    # No ca.crt in the TLS Secret (e.g. a public CA): rely on the system roots.
    install_file /node-trust/hosts-system-trust.toml hosts.toml
  fi
  sleep "$SYNC_SECONDS" &
  wait $!
done
