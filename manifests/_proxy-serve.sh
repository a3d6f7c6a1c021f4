#!/bin/sh
# Runs the proxy (its command is this script's arguments), and restarts it once its
# certificate is renewed. Caddy, with its admin API off, reads the certificate only at
# start; cert-manager renews the Secret well before expiry and kubelet updates the
# mounted file, so a restart of this container is all that stands between a renewal and
# clients seeing it.
set -eu
served=$(sha256sum "$TLS_CERTIFICATE")
"$@" &
server=$!
# The pod's stop signal reaches this shell (PID 1): pass it on, so the server drains,
# and stop checking at once, so the pod ends as soon as the server has.
stopping=""
trap 'stopping=1; kill -TERM "$server" 2>/dev/null || true' TERM INT
while [ -z "$stopping" ] && kill -0 "$server" 2>/dev/null; do
  if [ "$(sha256sum "$TLS_CERTIFICATE")" != "$served" ]; then
    echo "$TLS_CERTIFICATE changed; restarting to serve the new certificate" >&2
    kill -TERM "$server"
    break
  fi
  sleep "$CERTIFICATE_CHECK_SECONDS" &
  wait $! || true
done
wait "$server"
