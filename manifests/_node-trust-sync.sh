# Node trust for one registry: $HOST_DIR is the node's <certs_dir>/<ip:port>, the only
# host path this pod sees. `sync` keeps containerd's hosts.toml and the registry's CA
# there; `remove` (only unprovision switches to it) empties it. containerd rereads both
# files on every pull, so nothing restarts; they carry no k3s header, so k3s leaves them.
set -eu
dir="$HOST_DIR"

# Stopping leaves the files: a rollout, an eviction or a node shutdown must not take
# trust away, least of all while the next pod's image is being pulled.
trap 'exit 0' TERM INT

idle() {
  while :; do
    sleep "$SYNC_SECONDS" &
    wait $!
    "$@"
  done
}

# put NAME COMMAND...: the command's output becomes $dir/NAME unless it holds exactly
# that already; write-then-rename, so containerd never reads half a file.
put() {
  name="$1"
  shift
  if ! "$@" | cmp -s - "$dir/$name"; then
    "$@" >"$dir/.$name.tmp"
    mv -f "$dir/.$name.tmp" "$dir/$name"
    echo "updated $dir/$name"
  fi
}

sync_files() {
  # Older k3s releases delete certs.d at start: a deleted mount source has no links
  # left, and only a new container (containerd makes the path again) sees the new one.
  if [ "$(stat -c %h "$dir")" -eq 0 ]; then
    echo "$dir was deleted on the node; restarting to mount it again" >&2
    exit 1
  fi
  if [ -s /registry-tls/ca.crt ]; then
    put ca.crt cat /registry-tls/ca.crt
    put hosts.toml printf '%s' "$HOSTS_TOML"
  else
    # No ca.crt in the TLS Secret (e.g. a public CA): rely on the system roots.
    put hosts.toml printf '%s' "$HOSTS_TOML_SYSTEM_TRUST"
  fi
}

case "$1" in
  sync)
    sync_files
    idle sync_files
    ;;
  remove)
    find "$dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    echo "removed this registry's files from $dir"
    idle true
    ;;
  *)
    echo "unknown mode $1" >&2
    exit 2
    ;;
esac
