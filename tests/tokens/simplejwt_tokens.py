"""The legacy tokens of the Django app, made by djangorestframework-simplejwt itself (issue 21).

    simplejwt_tokens.py --secret S --user-id N [--access-lifetime SECONDS]
                        [--refresh-lifetime SECONDS]

prints `{"access": "...", "refresh": "..."}` on one line: the pair the app's login answered, from
`RefreshToken.for_user` and its `access_token`, signed HS256 with the Django `SECRET_KEY` S.
Everything else is simplejwt's default, as in the app: lifetimes of 5 minutes and 1 day, claims
`token_type`, `exp`, `iat`, `jti` and `user_id`, no `iss`, `aud` or `kid`. A negative lifetime
makes a token that has already expired.
"""

import argparse
import json
from datetime import timedelta
from types import SimpleNamespace

import django
from django.conf import settings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret", required=True)
    parser.add_argument("--user-id", required=True, type=int)
    parser.add_argument("--access-lifetime", type=int, metavar="SECONDS")
    parser.add_argument("--refresh-lifetime", type=int, metavar="SECONDS")
    args = parser.parse_args()

    simple_jwt = {}
    if args.access_lifetime is not None:
        simple_jwt["ACCESS_TOKEN_LIFETIME"] = timedelta(seconds=args.access_lifetime)
    if args.refresh_lifetime is not None:
        simple_jwt["REFRESH_TOKEN_LIFETIME"] = timedelta(seconds=args.refresh_lifetime)
    settings.configure(
        SECRET_KEY=args.secret,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
            "rest_framework_simplejwt",
        ],
        DATABASES={},
        SIMPLE_JWT=simple_jwt,
    )
    django.setup()
    # Imported only now: simplejwt reads its settings when its modules load.
    from rest_framework_simplejwt.tokens import RefreshToken

    # The login view (TokenObtainPairSerializer) calls `for_user`, which reads only the user's
    # id (USER_ID_FIELD) from the user.
    refresh = RefreshToken.for_user(SimpleNamespace(id=args.user_id))
    print(json.dumps({"access": str(refresh.access_token), "refresh": str(refresh)}))


if __name__ == "__main__":
    main()
