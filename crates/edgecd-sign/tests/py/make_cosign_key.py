"""Writes a cosign-format encrypted P-256 key pair, independently of edgecd.

Usage: make_cosign_key.py <out prefix> <password>
Writes <prefix>.key (ENCRYPTED SIGSTORE PRIVATE KEY: scrypt + NaCl secretbox around the
PKCS#8 DER, as cosign / go-securesystemslib `encrypted` do) and <prefix>.pub (SPKI PEM).
The key pair itself comes from the `openssl` CLI (the test venv has PyNaCl but not the
`cryptography` package); scrypt is hashlib's, secretbox is PyNaCl's.
"""
import base64
import hashlib
import json
import os
import subprocess
import sys

from nacl.secret import SecretBox

N, R, P = 32768, 8, 1


def main() -> None:
    prefix, password = sys.argv[1], sys.argv[2].encode()
    # OpenSSL 3.0 writes SEC1 for `genpkey -outform DER`; `pkcs8 -topk8` makes it PKCS#8 (as cosign stores it).
    sec1 = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    pkcs8 = subprocess.run(
        ["openssl", "pkcs8", "-topk8", "-nocrypt", "-inform", "DER", "-outform", "DER"],
        input=sec1,
        check=True,
        capture_output=True,
    ).stdout
    assert pkcs8[3:6] == b"\x02\x01\x00", "expected a PKCS#8 PrivateKeyInfo (version 0)"
    pub = subprocess.run(
        ["openssl", "pkey", "-inform", "DER", "-pubout"], input=pkcs8, check=True, capture_output=True
    ).stdout
    salt = os.urandom(32)
    nonce = os.urandom(SecretBox.NONCE_SIZE)
    box_key = hashlib.scrypt(password, salt=salt, n=N, r=R, p=P, maxmem=256 * 1024 * 1024, dklen=32)
    # .ciphertext is NaCl's tag || encrypted bytes (the nonce is stored separately).
    sealed = SecretBox(box_key).encrypt(pkcs8, nonce).ciphertext
    body = {
        "kdf": {"name": "scrypt", "params": {"N": N, "r": R, "p": P}, "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    b64 = base64.b64encode(json.dumps(body).encode()).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    pem = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    with open(prefix + ".key", "w") as f:
        f.write(pem)
    with open(prefix + ".pub", "wb") as f:
        f.write(pub)


if __name__ == "__main__":
    main()
