"""Readers' signing keys: Ed25519, one per reader, the private half kept encrypted.

The private key never leaves the server unencrypted: it is stored sealed with a key derived
from the server's secret (``TELEDIAG_SECRET_KEY``; embedded: ``data_dir/secret.key``), and is
opened only to sign a report digest. The public half is published so anyone can verify a
signed report without trusting telediag's database.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"


class KeyVault:
    """Makes and uses reader keys under one server secret."""

    def __init__(self, secret: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"telediag-signing-keys\0" + secret).digest()))

    def new_key(self) -> tuple[str, str]:
        """(public key as base64 of its 32 raw bytes, the sealed private key)."""
        private = Ed25519PrivateKey.generate()
        raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(public).decode(), self._fernet.encrypt(raw).decode()

    def sign(self, sealed_private: str, message: bytes) -> str:
        """Base64 signature of ``message`` by the sealed key."""
        private = Ed25519PrivateKey.from_private_bytes(self._fernet.decrypt(sealed_private.encode()))
        return base64.b64encode(private.sign(message)).decode()


def verify_signature(public_key_b64: str, message: bytes, signature_b64: str) -> bool:
    """Whether ``signature_b64`` is the key's signature of ``message`` (needs no secret)."""
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64)).verify(
            base64.b64decode(signature_b64), message)
    except (InvalidSignature, ValueError):
        return False
    return True
