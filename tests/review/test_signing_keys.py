"""Readers' signing keys, checked against an independent implementation: OpenSSL's command
line verifies what telediag signs (Ed25519, and SM2 with SM3 and the GB/T 35276 default ID),
and telediag verifies what OpenSSL signs."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from telediag.network import KeyVault, public_key_pem, verify_signature

OPENSSL_SM2 = ["-digest", "sm3", "-pkeyopt", "distid:1234567812345678"]


@pytest.fixture
def openssl(tmp_path: Path):
    """Run ``openssl pkeyutl`` over files in ``tmp_path``; True when it exits 0."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is not installed")

    def run(*args: str) -> bool:
        return subprocess.run(["openssl", "pkeyutl", *args], cwd=tmp_path, capture_output=True).returncode == 0
    return run


def _files(tmp_path: Path, public_b64: str, algorithm: str, message: bytes, signature_b64: str) -> None:
    (tmp_path / "pub.pem").write_text(public_key_pem(public_b64, algorithm))
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig").write_bytes(base64.b64decode(signature_b64))


@pytest.mark.parametrize("algorithm, extra", [("ed25519", []), ("sm2", OPENSSL_SM2)])
def test_openssl_verifies_what_a_reader_signs(tmp_path: Path, openssl, algorithm: str, extra: list[str]) -> None:
    vault = KeyVault(b"server secret", algorithm)
    for i in range(8):  # several keys: SM2 points and signatures of every leading byte
        key = vault.new_key()
        assert key.algorithm == algorithm and base64.b64decode(key.public_key) not in key.sealed.encode()
        digest = hashlib.sha256(f"report {i}".encode()).digest()
        signature = vault.sign(key, digest)
        assert verify_signature(key.public_key, digest, signature, algorithm)
        _files(tmp_path, key.public_key, algorithm, digest, signature)
        verify = ["-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "msg", "-sigfile", "sig", *extra]
        assert openssl(*verify), f"OpenSSL refused a {algorithm} signature"
        (tmp_path / "msg").write_bytes(hashlib.sha256(b"another report").digest())
        assert not openssl(*verify)


def test_telediag_verifies_what_openssl_signs_with_sm2(tmp_path: Path, openssl) -> None:
    assert subprocess.run(["openssl", "genpkey", "-algorithm", "sm2", "-out", "key.pem"], cwd=tmp_path).returncode == 0
    subprocess.run(["openssl", "pkey", "-in", "key.pem", "-pubout", "-outform", "DER", "-out", "pub.der"],
                   cwd=tmp_path, check=True)
    digest = hashlib.sha256(b"a report").digest()
    (tmp_path / "msg").write_bytes(digest)
    assert openssl("-sign", "-inkey", "key.pem", "-rawin", "-in", "msg", "-out", "sig", *OPENSSL_SM2)
    public = base64.b64encode((tmp_path / "pub.der").read_bytes()[-65:]).decode()  # SEC1 point ends the SPKI
    signature = base64.b64encode((tmp_path / "sig").read_bytes()).decode()
    assert verify_signature(public, digest, signature, "sm2")
    assert not verify_signature(public, hashlib.sha256(b"b report").digest(), signature, "sm2")
    assert not verify_signature(public, digest, signature, "ed25519")


def test_sm2_refuses_malformed_signatures_and_keys() -> None:
    vault = KeyVault(b"server secret", "sm2")
    key = vault.new_key()
    digest = hashlib.sha256(b"x").digest()
    der = base64.b64decode(vault.sign(key, digest))
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    assert verify_signature(key.public_key, digest, b64(der), "sm2")
    assert not verify_signature(key.public_key, digest, b64(der + b"\0"), "sm2")          # trailing byte
    assert not verify_signature(key.public_key, digest, b64(der[:-1]), "sm2")             # truncated
    assert not verify_signature(key.public_key, digest, b64(b"\x30\x06\x02\x01\x00\x02\x01\x01"), "sm2")  # r = 0
    assert not verify_signature(key.public_key, digest, "not base64!", "sm2")
    point = bytearray(base64.b64decode(key.public_key))
    point[-1] ^= 1                                                                       # off the curve
    assert not verify_signature(b64(bytes(point)), digest, b64(der), "sm2")


def test_a_network_that_switches_algorithm_keeps_signing_with_each_key_its_own() -> None:
    old = KeyVault(b"server secret", "ed25519").new_key()
    switched = KeyVault(b"server secret", "sm2")
    digest = hashlib.sha256(b"x").digest()
    assert verify_signature(old.public_key, digest, switched.sign(old, digest), "ed25519")
    assert switched.new_key().algorithm == "sm2"
    with pytest.raises(ValueError, match="known: ed25519, sm2"):
        KeyVault(b"server secret", "rsa")
