"""Recognising secret material in text (ConfigMap files, env values), by its shape: PEM
private keys, well-known token formats, passwords in Redis and ACL syntax, credentials
in URLs, and `name = value` pairs whose name says it holds a secret. Findings describe
what was seen, never the value."""

from __future__ import annotations

import re
from typing import Final

_PRIVATE_KEY: Final = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_TOKENS: Final = (
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "a JWT"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"), "a GitHub token"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), "a Google API key"),
    (re.compile(r"\bya29\.[0-9A-Za-z_-]{20,}"), "a Google OAuth token"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "an AWS access key"),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (re.compile(r'"private_key(_id)?"\s*:'), "a service account key"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@$]+:[^/\s@$]+@"), "credentials in a URL"),
)
# Redis directives whose argument is a password, and ACL rules setting a plaintext one.
_REDIS_PASSWORD: Final = re.compile(r"(?im)^\s*(requirepass|masterauth)\s+\S")
_ACL_PLAINTEXT: Final = re.compile(r"(?m)^\s*user\s+\S+\s.*(?<=\s)>\S")
# `name = value`, `name: value`, `"name": "value"` in config files and scripts; on one
# line and scalars only: `"secret": {"secretName": ...}` (a volume of a manifest kept in
# a ConfigMap) names a reference, not a value.
_ASSIGNMENT: Final = re.compile(
    r"""["']?([A-Za-z][A-Za-z0-9_.-]*)["']?[ \t]*[:=][ \t]*["']?([^"'\s,;{}\[\]#]*)"""
)
_SECRET_WORDS: Final = frozenset(
    {"password", "passwd", "pwd", "pass", "passphrase", "secret", "token", "apikey", "auth"}
    | {"credential", "credentials"}
)
_SECRET_PAIRS: Final = frozenset(
    {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")}
    | {("client", "secret"), ("signing", "key")}
)
_NOT_SECRETS: Final = frozenset({"true", "false", "yes", "no", "on", "off", "null", "none", "-"})


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)  # camelCase -> camel Case
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def secret_like_name(name: str) -> bool:
    """Whether a variable or key names a secret itself (REDIS_PASSWORD, jwtSecret), rather
    than a reference to one (REDIS_PASSWORD_FILE, secretName, passwordKey): its last word
    (or two) says so."""
    words = _words(name)
    return bool(words) and (words[-1] in _SECRET_WORDS or tuple(words[-2:]) in _SECRET_PAIRS)


def is_literal(value: str) -> bool:
    """A value that could itself be a secret: not empty, a path, a placeholder
    ($VAR, $(cat ...), {{ }}) or a flag."""
    plain = value.strip().strip("\"'")
    return bool(plain) and not (
        plain.startswith(("/", "./", "$", "{{", "<")) or plain.lower() in _NOT_SECRETS
    )


def secret_material(text: str) -> list[str]:
    """What in `text` looks like secret material: descriptions, never the values."""
    found = []
    if _PRIVATE_KEY.search(text):
        found.append("a PEM private key")
    found += [what for pattern, what in _TOKENS if pattern.search(text)]
    if _REDIS_PASSWORD.search(text):
        found.append("a Redis password directive (requirepass/masterauth)")
    if _ACL_PLAINTEXT.search(text):
        found.append("a plaintext ACL password ('>password')")
    names = {
        m.group(1)
        for m in _ASSIGNMENT.finditer(text)
        if secret_like_name(m.group(1)) and is_literal(m.group(2))
    }
    found += [f"a value for '{name}'" for name in sorted(names)]
    return found
