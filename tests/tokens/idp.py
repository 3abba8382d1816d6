"""A stand-in identity provider for the tests of tokens Guichet did not issue (issue 21).

    idp.py keygen --alg RS256|ES256|EdDSA|HS256 --kid KID --out PATH
        writes a private key to PATH (PEM; for HS256 a random secret as text) and prints its
        public JWK (for HS256 the `oct` JWK of the secret itself) as one JSON object.
    idp.py mint --key PATH --alg ALG [--kid KID] --claims JSON
        prints a compact JWT of those claims signed by PyJWT with the key at PATH, with `kid` in
        its header if given; `--alg none` needs no key and makes an unsigned token.
"""

import argparse
import json
import secrets
import sys
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

GENERATORS = {
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}


def keygen(args):
    algorithm = jwt.get_algorithm_by_name(args.alg)
    if args.alg == "HS256":
        secret = secrets.token_urlsafe(32)
        args.out.write_text(secret)
        jwk = algorithm.to_jwk(secret.encode(), as_dict=True)
    else:
        key = GENERATORS[args.alg]()
        args.out.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
    # PyJWT adds `key_ops` to RSA keys; identity providers publish `use` alone (RFC 7517 §4.3).
    jwk.pop("key_ops", None)
    kty = jwk.pop("kty")
    print(json.dumps({"kty": kty, "kid": args.kid, "alg": args.alg, "use": "sig", **jwk}))


def mint(args):
    if args.alg == "none":
        key = None
    elif args.key is None:
        sys.exit(f"idp.py mint: --alg {args.alg} needs --key")
    else:
        key = args.key.read_text()
    headers = {"kid": args.kid} if args.kid is not None else None
    print(jwt.encode(json.loads(args.claims), key, algorithm=args.alg, headers=headers))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True)
    command = commands.add_parser("keygen", help="write a private key, print its public JWK")
    command.add_argument("--alg", required=True, choices=[*GENERATORS, "HS256"])
    command.add_argument("--kid", required=True)
    command.add_argument("--out", required=True, type=Path)
    command.set_defaults(run=keygen)
    command = commands.add_parser("mint", help="print a signed (or, with --alg none, unsigned) JWT")
    command.add_argument("--key", type=Path)
    command.add_argument("--alg", required=True)
    command.add_argument("--kid")
    command.add_argument("--claims", required=True)
    command.set_defaults(run=mint)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
