"""Readers' signing keys: one per reader, Ed25519 by default or SM2 where national
cryptography (国密) is required, the private half kept encrypted.

The private key never leaves the server unencrypted: it is stored sealed with a key derived
from the server's secret (``TELEDIAG_SECRET_KEY``; embedded: ``data_dir/secret.key``), and is
opened only to sign a report digest. The public half is published (raw, and as a PEM that
OpenSSL reads) so anyone can verify a signed report without trusting telediag's database.

Which algorithm a new reader's key uses is the network's choice
(``TELEDIAG_SIGNATURE_ALGORITHM``); each key and each signature records its own, so a
network that switches keeps every earlier report verifiable.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from gmssl import sm2

from telediag.domain import SigningKey

ED25519 = "ed25519"
SM2 = "sm2"
ALGORITHMS = (ED25519, SM2)


class _Scheme(Protocol):
    """One signature algorithm over raw key bytes."""

    def generate(self) -> tuple[bytes, bytes]:
        """(private key, public key), raw."""

    def sign(self, private: bytes, public: bytes, message: bytes) -> bytes:
        """The signature of ``message`` by the key pair (``public`` is part of what SM2 signs)."""

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool: ...

    def pem(self, public: bytes) -> str:
        """The public key as a PEM SubjectPublicKeyInfo."""


class _Ed25519:
    """RFC 8032 Ed25519: 32-byte keys, 64-byte signatures."""

    def generate(self) -> tuple[bytes, bytes]:
        private = Ed25519PrivateKey.generate()
        return (private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption()),
                private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def sign(self, private: bytes, public: bytes, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(private).sign(message)

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def pem(self, public: bytes) -> str:
        return Ed25519PublicKey.from_public_bytes(public).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class _Sm2:
    """GB/T 32918.2 SM2 with SM3 and the default signer ID ``1234567812345678`` (GB/T 35276):
    public key SEC1 uncompressed (65 bytes), signature DER ``SEQUENCE {r, s}``, as OpenSSL and
    the national-cryptography toolkits exchange them.

    The curve arithmetic is gmssl's; what this class adds is what that library leaves to its
    caller: the nonce from ``secrets`` (gmssl's default draws it from ``random``), the strict
    range and on-curve checks before verifying, and the key's hex handed over without its
    ``04`` prefix (gmssl strips it with ``lstrip``, which would eat leading digits too)."""

    _T = sm2.default_ecc_table
    _N, _P = int(_T["n"], 16), int(_T["p"], 16)
    _A, _B = int(_T["a"], 16), int(_T["b"], 16)
    #: SubjectPublicKeyInfo up to the key: id-ecPublicKey, curve SM2 (1.2.156.10197.1.301).
    _SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")

    def _crypt(self, private_hex: str, public: bytes) -> sm2.CryptSM2:
        crypt = sm2.CryptSM2(private_key=private_hex, public_key="")
        crypt.public_key = public[1:].hex()
        return crypt

    def generate(self) -> tuple[bytes, bytes]:
        d = secrets.randbelow(self._N - 2) + 1
        xy = sm2.CryptSM2(private_key="", public_key="")._kg(d, self._T["g"])
        return d.to_bytes(32, "big"), b"\x04" + bytes.fromhex(xy)

    def sign(self, private: bytes, public: bytes, message: bytes) -> bytes:
        crypt = self._crypt(private.hex(), public)
        while True:  # a nonce that gives r = 0 or s = 0 is drawn again (probability ~2^-256)
            rs = crypt.sign_with_sm3(message, format(secrets.randbelow(self._N - 1) + 1, "064x"))
            if rs is not None:
                return _der_pair(int(rs[:64], 16), int(rs[64:], 16))

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        pair = _der_unpair(signature)
        if pair is None or len(public) != 65 or public[0] != 4:
            return False
        r, s = pair
        x, y = int.from_bytes(public[1:33], "big"), int.from_bytes(public[33:], "big")
        on_curve = x < self._P and y < self._P and (y * y - x ** 3 - self._A * x - self._B) % self._P == 0
        if not (on_curve and 0 < r < self._N and 0 < s < self._N):
            return False
        return bool(self._crypt("", public).verify_with_sm3(f"{r:064x}{s:064x}", message))

    def pem(self, public: bytes) -> str:
        body = base64.encodebytes(self._SPKI_PREFIX + public).decode()
        return f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n"


def _der_pair(r: int, s: int) -> bytes:
    """DER ``SEQUENCE {INTEGER r, INTEGER s}`` (both below 2^256, so short lengths suffice)."""
    def integer(v: int) -> bytes:
        raw = v.to_bytes(v.bit_length() // 8 + 1, "big")  # a leading zero keeps it positive
        return b"\x02" + bytes([len(raw)]) + raw
    body = integer(r) + integer(s)
    return b"\x30" + bytes([len(body)]) + body


def _der_unpair(der: bytes) -> tuple[int, int] | None:
    """(r, s) of exactly what ``_der_pair`` writes (minimal, positive), else None."""
    if len(der) < 8 or der[0] != 0x30 or der[1] != len(der) - 2:
        return None
    values, at = [], 2
    for _ in range(2):
        if at + 2 > len(der) or der[at] != 0x02:
            return None
        n = der[at + 1]
        raw = der[at + 2:at + 2 + n]
        if n == 0 or len(raw) != n or raw[0] & 0x80 or (n > 1 and raw[0] == 0 and not raw[1] & 0x80):
            return None
        values.append(int.from_bytes(raw, "big"))
        at += 2 + n
    return (values[0], values[1]) if at == len(der) else None


_SCHEMES: dict[str, _Scheme] = {ED25519: _Ed25519(), SM2: _Sm2()}


def check_algorithm(algorithm: str) -> str:
    """The algorithm's name, or ValueError naming the ones there are."""
    if algorithm not in _SCHEMES:
        raise ValueError(f"unknown signature algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    return algorithm


class KeyVault:
    """Makes and uses reader keys under one server secret."""

    def __init__(self, secret: bytes, algorithm: str = ED25519) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"telediag-signing-keys\0" + secret).digest()))
        self.algorithm = check_algorithm(algorithm)

    def new_key(self) -> SigningKey:
        """A key pair in the network's algorithm."""
        private, public = _SCHEMES[self.algorithm].generate()
        return SigningKey(self.algorithm, base64.b64encode(public).decode(), self._fernet.encrypt(private).decode())

    def sign(self, key: SigningKey, message: bytes) -> str:
        """Base64 signature of ``message`` by a reader's key, in the key's own algorithm."""
        private = self._fernet.decrypt(key.sealed.encode())
        return base64.b64encode(_SCHEMES[key.algorithm].sign(private, base64.b64decode(key.public_key), message)).decode()


def verify_signature(public_key_b64: str, message: bytes, signature_b64: str, algorithm: str = ED25519) -> bool:
    """Whether ``signature_b64`` is the key's signature of ``message`` (needs no secret)."""
    try:
        public, signature = base64.b64decode(public_key_b64), base64.b64decode(signature_b64)
    except ValueError:
        return False
    return _SCHEMES[check_algorithm(algorithm)].verify(public, message, signature)


def public_key_pem(public_key_b64: str, algorithm: str) -> str:
    """The published key as a PEM SubjectPublicKeyInfo, for OpenSSL and other verifiers."""
    return _SCHEMES[check_algorithm(algorithm)].pem(base64.b64decode(public_key_b64))
