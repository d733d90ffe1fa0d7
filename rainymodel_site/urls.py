from django.contrib import admin
from django.urls import include, path

from rainymodel_site import health, login
from usage import api as usage_api

admin.site.login_form = login.AdminLoginForm  # failed sign-ins are throttled (rainymodel_site/login.py)

urlpatterns = [
    path("health", health.health),
    path("health/ready", health.ready),
    path("admin/login/", login.admin_login),
    path("accounts/login/", login.LoginView.as_view(), name="login"),
    path("admin/", admin.site.urls),
    path("v1/usage", usage_api.usage_view),
    path("v1/", include("routing.proxy.urls")),
    path("", include("usage.urls")),
]

handler404 = "routing.proxy.errors.not_found_handler"
handler500 = "routing.proxy.errors.server_error_handler"
