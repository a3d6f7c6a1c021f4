#!/bin/sh
# Runs the registry, and restarts it once its certificate is renewed. Distribution reads
# the certificate only at start (distribution/distribution#3712); cert-manager renews the
# Secret well before expiry and kubelet updates the mounted file, so a restart of this
# container is all that stands between a renewal and clients seeing it.
set -eu
served=$(sha256sum "$TLS_CERTIFICATE")
registry serve /etc/distribution/config.yml &
registry=$!
# The pod's stop signal reaches this shell (PID 1): pass it on, so the registry drains,
# and stop checking at once, so the pod ends as soon as the registry has.
stopping=""
trap 'stopping=1; kill -TERM "$registry" 2>/dev/null || true' TERM INT
while [ -z "$stopping" ] && kill -0 "$registry" 2>/dev/null; do
  if [ "$(sha256sum "$TLS_CERTIFICATE")" != "$served" ]; then
    echo "$TLS_CERTIFICATE changed; restarting the registry to serve the new certificate" >&2
    kill -TERM "$registry"
    break
  fi
  sleep "$CERTIFICATE_CHECK_SECONDS" &
  wait $! || true
done
wait "$registry"
