"""Password hashes for `fieldear serve --password-file`: scrypt (hashlib, standard library), salted.

Format: ``scrypt:N:r:p$<salt hex>$<key hex>``; made by `fieldear serve --hash-password`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from runtime.errors import ConfigError

N, R, P = 2**14, 8, 1
KEY_LEN = 32


def hash_password(password: str, salt: bytes | None = None) -> str:
    if not password:
        raise ConfigError("empty password", "type a password (it is hashed, never stored)")
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=N, r=R, p=P, dklen=KEY_LEN)
    return f"scrypt:{N}:{R}:{P}${salt.hex()}${key.hex()}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    head, salt_hex, key_hex = stored.strip().split("$")
    kind, n, r, p = head.split(":")
    if kind != "scrypt":
        raise ValueError(kind)
    return int(n), int(r), int(p), bytes.fromhex(salt_hex), bytes.fromhex(key_hex)


def check_hash(stored: str, where: str = "password file") -> str:
    """The hash, stripped, if it is one ``hash_password`` made; else a ConfigError."""
    try:
        n, r, p, salt, key = _parse(stored)
        if n < 2 or r < 1 or p < 1 or not salt or not key:
            raise ValueError("parameters")
    except ValueError:
        raise ConfigError(f"{where}: not a password hash", "make one with `fieldear serve --hash-password > FILE`") from None
    return stored.strip()


def verify_password(stored: str, password: str) -> bool:
    try:
        n, r, p, salt, key = _parse(stored)
        got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(key), maxmem=2**26)
    except (ValueError, UnicodeError):
        return False
    return hmac.compare_digest(got, key)


def read_hash_file(path: Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--password-file {path}: cannot read: {exc.strerror}",
                          "make it with `fieldear serve --hash-password > FILE` (mode 0640, group fieldear)") from None
    return check_hash(text, f"--password-file {path}")
