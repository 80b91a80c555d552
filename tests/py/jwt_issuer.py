#!/usr/bin/env python3
"""A stand-in OpenID Connect provider for the tests: makes an EC P-256 key and
its JWKS, and signs JWTs with chosen claims (or deliberately bad ones).

  jwt_issuer.py keys DIR
  jwt_issuer.py token DIR --iss I --aud A --role R --user U [--exp SECONDS]
                          [--other-key] [--alg-none]
"""
import argparse
import base64
import json
import os
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

KID = "custos-test-key"


def b64(n):
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def new_key(path):
    key = ec.generate_private_key(ec.SECP256R1())
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return key


def cmd_keys(a):
    os.makedirs(a.dir, exist_ok=True)
    key = new_key(os.path.join(a.dir, "key.pem"))
    new_key(os.path.join(a.dir, "other.pem"))
    pub = key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": KID, "use": "sig", "alg": "ES256",
                      "x": b64(pub.x), "y": b64(pub.y)}]}
    with open(os.path.join(a.dir, "jwks.json"), "w") as f:
        json.dump(jwks, f)


def cmd_token(a):
    now = int(time.time())
    claims = {"iss": a.iss, "aud": a.aud, "sub": "sub-" + a.user, "preferred_username": a.user,
              "custos_role": a.role, "iat": now, "exp": now + a.exp}
    if a.nbf is not None:
        claims["nbf"] = now + a.nbf
    if a.alg_none:
        print(jwt.encode(claims, None, algorithm="none", headers={"kid": KID}))
        return
    name = "other.pem" if a.other_key else "key.pem"
    with open(os.path.join(a.dir, name), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    print(jwt.encode(claims, key, algorithm="ES256", headers={"kid": KID}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keys")
    k.add_argument("dir")
    t = sub.add_parser("token")
    t.add_argument("dir")
    t.add_argument("--iss", required=True)
    t.add_argument("--aud", required=True)
    t.add_argument("--role", required=True)
    t.add_argument("--user", required=True)
    t.add_argument("--exp", type=int, default=300)
    t.add_argument("--nbf", type=int, help="not before: seconds from now")
    t.add_argument("--other-key", action="store_true")
    t.add_argument("--alg-none", action="store_true")
    a = p.parse_args()
    {"keys": cmd_keys, "token": cmd_token}[a.cmd](a)


if __name__ == "__main__":
    main()
