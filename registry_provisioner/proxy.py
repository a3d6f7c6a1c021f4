"""The authenticating proxy in front of the registry: Caddy's config, and nothing else.

distribution's htpasswd gives every user every right and checks bcrypt on every
request (about 75 ms of CPU at cost 10). Caddy, in the same pod, checks Basic
credentials once per login thanks to its hash cache, gives the pull login only
GET and HEAD, and forwards to distribution on 127.0.0.1 without credentials.
docs/pull-only-login.md has the design and the measurements.

Pure: the config holds no secret. Each login's bcrypt hash is read from a file
through Caddy's ``{file.*}`` placeholder, where the pod mounts the auth Secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# What the pull login may do; everything else it asks gets 403 DENIED.
PULL_METHODS = ("GET", "HEAD")
# distribution's own wording, so clients show the same errors as without the proxy.
API_VERSION_HEADER = {"Docker-Distribution-API-Version": ["registry/2.0"]}
DENIED_BODY = json.dumps(
    {
        "errors": [
            {
                "code": "DENIED",
                "message": "requested access to the resource is denied",
                "detail": None,
            }
        ]
    }
)
UNAUTHORIZED_BODY = json.dumps(
    {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}]}
)


def _json_answer(status: int, body: str) -> dict[str, Any]:
    return {
        "handler": "static_response",
        "status_code": status,
        "headers": {"Content-Type": ["application/json"], **API_VERSION_HEADER},
        "body": body,
    }


def _rights(proxy: dict[str, Any], admins: list[str], pull_users: list[str]) -> list[dict]:
    """Admins may do anything, pull users only read; the rest is refused as distribution would."""
    user = "{http.auth.user.id}"
    rights: list[dict[str, Any]] = []
    if admins:
        rights.append({"match": [{"vars": {user: admins}}], "handle": [proxy]})
    if pull_users:
        read_only = {"vars": {user: pull_users}, "method": list(PULL_METHODS)}
        rights.append({"match": [read_only], "handle": [proxy]})
    rights.append({"handle": [_json_answer(403, DENIED_BODY)]})
    return rights


def caddy_config(
    *,
    listen: str,
    upstream: str,
    certificate: str,
    key: str,
    hash_files: Mapping[str, str],
    pull_users: tuple[str, ...],
    realm: str,
    address: str,
    hash_cache: bool = True,
    access_log: bool = False,
) -> dict[str, Any]:
    """Caddy's JSON config: TLS on ``listen``, rights per login, ``upstream`` behind it.

    ``hash_files`` maps each user name to the file holding its bcrypt hash; the
    users in ``pull_users`` may only GET and HEAD, every other one may do anything.
    ``address`` is the IP clients dial: they send no SNI for an IP, and Caddy would
    otherwise look for a certificate of the pod's own IP and fail the handshake.
    No ``hash_files`` at all serves /v2/ without authentication (a benchmark's floor).
    """
    proxy = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": upstream}],
        # distribution has no auth of its own: the password need not travel further.
        "headers": {"request": {"delete": ["Authorization"]}},
    }
    admins = sorted(set(hash_files) - set(pull_users))
    basic: dict[str, Any] = {
        "realm": realm,
        "accounts": [
            {"username": user, "password": "{file." + path + "}"}
            for user, path in sorted(hash_files.items())
        ],
    }
    if hash_cache:
        basic["hash_cache"] = {}
    v2_handlers: list[dict[str, Any]] = [
        {"handler": "authentication", "providers": {"http_basic": basic}},
        {"handler": "subroute", "routes": _rights(proxy, admins, list(pull_users))},
    ]
    if not hash_files:  # the benchmark's floor: the same path without authentication
        v2_handlers = [proxy]
    server: dict[str, Any] = {
        "listen": [listen],
        # TLS only with the certificate given: no ACME, no redirect listener on :80.
        "automatic_https": {"disable": True},
        "tls_connection_policies": [{"default_sni": address, "fallback_sni": address}],
        "protocols": ["h1", "h2"],
        "routes": [
            {"match": [{"path": ["/v2", "/v2/*"]}], "handle": v2_handlers, "terminal": True},
            # distribution answers "/" without credentials: the pod's probes use it.
            {"match": [{"path": ["/"]}], "handle": [proxy], "terminal": True},
            {"handle": [{"handler": "static_response", "status_code": 404}]},
        ],
        # A failed login gets distribution's 401: the challenge the authentication
        # handler set stays, the body and API version header are distribution's.
        "errors": {
            "routes": [
                {
                    "match": [{"expression": "{http.error.status_code} == 401"}],
                    "handle": [_json_answer(401, UNAUTHORIZED_BODY)],
                }
            ]
        },
    }
    if access_log:
        server["logs"] = {}  # Caddy redacts Authorization in access logs
    return {
        # No admin endpoint and no autosaved config: the file is all there is.
        "admin": {"disabled": True, "config": {"persist": False}},
        "logging": {"logs": {"default": {"level": "INFO"}}},
        "apps": {
            "http": {"servers": {"registry": server}},
            "tls": {"certificates": {"load_files": [{"certificate": certificate, "key": key}]}},
        },
    }
