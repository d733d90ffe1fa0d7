from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from audit import pages as audit_pages
from rainymodel_site import health, login, metrics_view, pages, sso
from usage import api as usage_api

admin.site.login_form = login.AdminLoginForm  # failed sign-ins are throttled (rainymodel_site/login.py)

urlpatterns = [
    path("", pages.home, name="home"),
    path("favicon.ico", pages.favicon),
    path("health", health.health),
    path("health/ready", health.ready),
    path("metrics", metrics_view.metrics_view),  # Prometheus; token or staff (docs/observability.md)
    path("admin/login/", login.admin_login),
    path("accounts/login/", login.LoginView.as_view(), name="login"),
    path("oidc/authenticate/", sso.AuthenticateView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", sso.CallbackView.as_view(), name="oidc_authentication_callback"),
    path("oidc/logout/", sso.LogoutView.as_view(), name="oidc_logout"),
    # Logout also ends the Orcest Login session for users signed in through it (rainymodel_site/sso.py).
    path("accounts/logout/", sso.logout_view(auth_views.LogoutView.as_view())),
    path("admin/logout/", sso.logout_view(admin.site.admin_view(admin.site.logout))),
    path("admin/changes/", admin.site.admin_view(audit_pages.all_changes), name="audit-changes"),
    path("admin/", admin.site.urls),
    path("v1/usage", usage_api.usage_view),
    path("v1/", include("routing.proxy.urls")),
    path("", include("usage.urls")),
]

# JSON in the API's shape under /v1/, styled HTML pages everywhere else.
handler400 = "rainymodel_site.pages.bad_request"
handler403 = "rainymodel_site.pages.permission_denied"
handler404 = "rainymodel_site.pages.not_found"
handler500 = "rainymodel_site.pages.server_error"
