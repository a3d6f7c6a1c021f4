"""A registry login: its password and the two forms it is handed over in.

distribution checks the htpasswd line; kubelet pulls with the dockerconfigjson.
Pure, so rendering can stay pure.
"""

from __future__ import annotations

import base64
import json
import secrets

import bcrypt

# bcrypt cost: distribution checks the hash on every authenticated request, so keep it modest.
BCRYPT_ROUNDS = 10


def generate_password() -> str:
    """A URL-safe random password (32 chars), safe to paste into ``docker login``."""
    return secrets.token_urlsafe(24)


def htpasswd_line(user: str, password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """One ``user:hash`` line; distribution accepts only bcrypt, in the ``$2y$`` spelling."""
    if not user or ":" in user or any(c.isspace() for c in user):
        raise ValueError("htpasswd user must be non-empty without ':' or whitespace")
    secret = password.encode("utf-8")
    if not secret or len(secret) > 72:
        raise ValueError("bcrypt passwords must be 1-72 bytes")
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=rounds)).decode("ascii")
    return f"{user}:$2y${hashed[4:]}"


def dockerconfigjson(host: str, user: str, password: str) -> str:
    """The ``.dockerconfigjson`` payload kubelet uses to pull from ``host``."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    auth = {"username": user, "password": password, "auth": token}
    return json.dumps({"auths": {host: auth}}, sort_keys=True)
