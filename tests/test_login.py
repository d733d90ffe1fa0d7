"""Failed sign-ins to the admin and the usage pages are throttled per client IP and per username
(rainymodel_site/login.py, django-ratelimit on the shared cache); successful ones never are."""

import itertools
import re

import pytest

PASSWORD = "right-password-123"
_addresses = (f"198.51.100.{n}" for n in itertools.count(1))
_names = (f"person{n}" for n in itertools.count(1))

LOGIN_URLS = {"usage": "/accounts/login/", "admin": "/admin/login/"}


@pytest.fixture(autouse=True)
def low_limits(settings):
    settings.RAINYMODEL_LOGIN_FAILURES_PER_IP = "5/h"
    settings.RAINYMODEL_LOGIN_FAILURES_PER_USERNAME = "8/h"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(next(_names), password=PASSWORD, is_staff=True)


def sign_in(client, which, username, password, ip, **headers):
    return client.post(LOGIN_URLS[which], {"username": username, "password": password}, REMOTE_ADDR=ip, **headers)


def signed_in(response) -> bool:
    return response.status_code == 302


@pytest.mark.parametrize("which", ["usage", "admin"])
def test_after_five_failures_from_one_address_even_the_right_password_gets_429(which, client, staff):
    ip = next(_addresses)
    for _ in range(5):
        r = sign_in(client, which, next(_names), "wrong", ip)
        assert r.status_code == 200 and b"Too many" not in r.content
    r = sign_in(client, which, staff.username, PASSWORD, ip)
    assert r.status_code == 429
    assert re.search(rb"Too many failed sign-in attempts. Try again in \d+ (minutes|seconds).", r.content)
    assert "_auth_user_id" not in client.session
    # Another address is not affected.
    assert signed_in(sign_in(client, which, staff.username, PASSWORD, next(_addresses)))


@pytest.mark.parametrize("which", ["usage", "admin"])
def test_after_eight_failures_on_one_username_from_many_addresses_it_is_refused(which, client, staff):
    for _ in range(8):
        assert sign_in(client, which, staff.username, "wrong", next(_addresses)).status_code == 200
    r = sign_in(client, which, staff.username.upper(), PASSWORD, next(_addresses))
    assert r.status_code == 429 and b"Too many failed sign-in attempts" in r.content


def test_failures_below_the_limit_do_not_stop_the_right_password(client, staff):
    ip = next(_addresses)
    for _ in range(4):
        sign_in(client, "usage", staff.username, "wrong", ip)
    assert signed_in(sign_in(client, "usage", staff.username, PASSWORD, ip))


def test_successful_sign_ins_are_never_counted(client, staff):
    ip = next(_addresses)
    for _ in range(12):
        assert signed_in(sign_in(client, "usage", staff.username, PASSWORD, ip))
        client.logout()


def test_forwarded_for_headers_do_not_change_the_counted_address(client, staff):
    ip = next(_addresses)
    for n in range(5):
        sign_in(client, "usage", next(_names), "wrong", ip, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
    r = sign_in(client, "usage", staff.username, PASSWORD, ip, HTTP_X_FORWARDED_FOR="203.0.113.200")
    assert r.status_code == 429


def test_the_usage_sign_in_page_says_when_the_password_is_wrong(client, staff):
    r = sign_in(client, "usage", staff.username, "wrong", next(_addresses))
    assert r.status_code == 200 and b"Please enter a correct username and password" in r.content
