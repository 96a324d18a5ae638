"""Application-level encryption at rest (AES-256-GCM), keys wrapped by the master key.

Each dataset version gets its own random data key; the data key is stored only wrapped by the
master key. The dataset id is bound as associated data to both the wrapped key and the file, so
a file moved under another dataset's name fails to decrypt.

Example:
    >>> keyring = Keyring(os.urandom(32))
    >>> wrapped, blob = keyring.seal(b"parquet bytes", aad=b"acme-bigmart-cx/bigmart.loyalty/v1")
    >>> keyring.open(wrapped, blob, aad=b"acme-bigmart-cx/bigmart.loyalty/v1")
    b'parquet bytes'
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE = 12


class DecryptionFailed(Exception):
    """Ciphertext, key or associated data do not match (tampering, swap or wrong master key)."""


def _encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed("decryption failed: wrong key or tampered data") from exc


class Keyring:
    """Holds the 256-bit master key; wraps data keys and secrets."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._master = master_key

    def wrap(self, secret: bytes, aad: bytes) -> bytes:
        return _encrypt(self._master, secret, b"wrap:" + aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        return _decrypt(self._master, wrapped, b"wrap:" + aad)

    def seal(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Encrypt under a fresh data key; return ``(wrapped data key, ciphertext)``."""
        data_key = AESGCM.generate_key(bit_length=256)
        return self.wrap(data_key, aad), _encrypt(data_key, plaintext, aad)

    def open(self, wrapped_key: bytes, blob: bytes, aad: bytes) -> bytes:
        return _decrypt(self.unwrap(wrapped_key, aad), blob, aad)

    @property
    def key_id(self) -> str:
        """A public name for the master key, for logs and audit events: 8 hex digits.

        It is ``HMAC-SHA256(master key, "insight-gateway/key-id")`` cut to 32 bits, a key
        check value: it tells two keys apart and reveals nothing usable about either.
        """
        return hmac.new(self._master, b"insight-gateway/key-id", hashlib.sha256).hexdigest()[:8]


def token_secret_aad(collab_id: str) -> bytes:
    """Associated data of a collaboration's wrapped tokenisation secret."""
    return f"token-secret/{collab_id}".encode()


def hash_secret(secret: str) -> str:
    """Hash of an API-key secret. Secrets are 256-bit random, so a fast hash is sufficient."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_match(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
