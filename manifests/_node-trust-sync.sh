# Node trust for one registry and its mirrors. $HOST_DIR is the node's
# <certs_dir>/<ip:port>; each mirror's <certs_dir>/<upstream host> is mounted at
# /host/mirror-<i> for each i in $MIRRORS. These are the only host paths this pod sees.
# `sync` keeps containerd's hosts.toml and the registry's CA there; `remove` (only
# unprovision switches to it) empties them. containerd rereads both files on every
# pull, so nothing restarts; they carry no k3s header, so k3s leaves them.
# `probe` runs in provision's one-off pod on each node before anything changes: it
# sees <certs_dir> read-only at /host/certs, and only reports.
set -eu
MARK="# Managed by registry-provisioner"

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

# put DIR NAME COMMAND...: the command's output becomes DIR/NAME unless it holds
# exactly that already; write-then-rename, so containerd never reads half a file.
put() {
  dir="$1"
  name="$2"
  shift 2
  if ! "$@" | cmp -s - "$dir/$name"; then
    "$@" >"$dir/.$name.tmp"
    mv -f "$dir/.$name.tmp" "$dir/$name"
    echo "updated $dir/$name"
  fi
}

# foreign DIR: DIR holds a hosts.toml this tool did not write (k3s's, from
# registries.yaml, another tool's or a person's). Nothing in DIR is ours then.
foreign() {
  [ -s "$1/hosts.toml" ] && ! head -n 1 "$1/hosts.toml" | grep -qF "$MARK"
}

# refuse I NODE_DIR: the line provision reports (node_trust.REFUSAL starts it) when
# mirror I's hosts.toml, at NODE_DIR on the node, is someone else's.
refuse() {
  host="${2##*/}"
  echo "refused to replace $2/hosts.toml: this tool did not write it (k3s writes" \
    "it when its registries.yaml configures $host; else another tool or a person did)," \
    "so this node does not use the mirror of $host. Either remove $host from" \
    "registries.yaml (mirrors and configs) and restart k3s, or delete the file; or set" \
    "mirrors[$1].replace_node_config: true to replace it" >&2
}

# sync_dir DIR HOSTS_TOML HOSTS_TOML_SYSTEM_TRUST
sync_dir() {
  # Older k3s releases delete certs.d at start: a deleted mount source has no links
  # left, and only a new container (containerd makes the path again) sees the new one.
  if [ "$(stat -c %h "$1")" -eq 0 ]; then
    echo "$1 was deleted on the node; restarting to mount it again" >&2
    exit 1
  fi
  if [ -s /registry-tls/ca.crt ]; then
    put "$1" ca.crt cat /registry-tls/ca.crt
    put "$1" hosts.toml printf '%s' "$2"
  else
    # No ca.crt in the TLS Secret (e.g. a public CA): rely on the system roots.
    put "$1" hosts.toml printf '%s' "$3"
  fi
}

sync_files() {
  sync_dir "$HOST_DIR" "$HOSTS_TOML" "$HOSTS_TOML_SYSTEM_TRUST"
  for i in ${MIRRORS:-}; do
    dir="/host/mirror-$i"
    eval "node_dir=\$NODE_DIR_$i replace=\$REPLACE_$i toml=\$HOSTS_TOML_$i"
    eval "toml_system=\$HOSTS_TOML_SYSTEM_TRUST_$i"
    # Someone else's hosts.toml stays unless the settings say to replace it: this pod
    # then stays unready and logs the refusal on every pass, which provision watches
    # for and reports with the node's name. (Provision's probe normally finds such a
    # file first; this covers one written since, e.g. by k3s at a restart.)
    if foreign "$dir" && [ "$replace" != true ]; then
      refuse "$i" "$node_dir"
      continue
    fi
    sync_dir "$dir" "$toml" "$toml_system"
    # The upstream's own CA (ca_config_map), which hosts.toml names for the fallback.
    if [ -s "/registry-tls/upstream-$i.crt" ]; then
      put "$dir" upstream-ca.crt cat "/registry-tls/upstream-$i.crt"
    fi
  done
}

case "$1" in
  probe)
    for i in ${MIRRORS:-}; do
      eval "node_dir=\$NODE_DIR_$i replace=\$REPLACE_$i"
      if foreign "/host/certs/${node_dir##*/}" && [ "$replace" != true ]; then
        refuse "$i" "$node_dir"
      fi
    done
    ;;
  sync)
    sync_files
    idle sync_files
    ;;
  remove)
    # KEEP_REGISTRY: only mirrors the settings dropped are emptied.
    for dir in $(test "${KEEP_REGISTRY:-}" = true || echo "$HOST_DIR") /host/mirror-*; do
      [ -d "$dir" ] || continue
      # A hosts.toml not ours means sync never wrote in DIR: leave it all as it is.
      if foreign "$dir"; then
        echo "left $dir as it is: its hosts.toml is not this tool's"
        continue
      fi
      find "$dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
      echo "removed this registry's files from $dir"
    done
    idle true
    ;;
  *)
    echo "unknown mode $1" >&2
    exit 2
    ;;
esac
