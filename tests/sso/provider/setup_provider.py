"""Creates the test provider's RSA key, users, groups and client. Run by tests/sso/conftest.py in the provider's
own process (DJANGO_SETTINGS_MODULE=tests.sso.provider.settings): argv = redirect URI, post-logout URI."""

import sys

import django

django.setup()

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402
from oidc_provider.models import Client, ResponseType, RSAKey  # type: ignore[import-untyped]  # noqa: E402

key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
).decode()
RSAKey.objects.create(key=pem)
staff = Group.objects.create(name="rainymodel-staff")
alice = User.objects.create_user("alice", "alice@example.test", "alice-pass-123", first_name="Alice")
bob = User.objects.create_user("bob", "bob@example.test", "bob-pass-123", first_name="Bob")
bob.groups.add(staff)
client = Client.objects.create(
    name="RainyModel",
    client_type="confidential",
    client_id="rainymodel",
    client_secret="rainymodel-secret",
    jwt_alg="RS256",
    require_consent=False,
)
client.redirect_uris = [sys.argv[1]]
client.post_logout_redirect_uris = [sys.argv[2]]
client.scope = ["openid", "email", "profile"]
client.save()
client.response_types.add(ResponseType.objects.get(value="code"))
print(pem)
