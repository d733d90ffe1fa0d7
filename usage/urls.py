"""Usage pages and sign-in (mounted at the site root by rainymodel_site/urls.py)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from usage import views

urlpatterns = [
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("usage/", views.overview, name="usage-overview"),
    path("usage/breakdown/", views.breakdown, name="usage-breakdown"),
    path("usage/keys/", views.keys, name="usage-keys"),
    path("usage/keys/<int:key_id>/", views.key_detail, name="usage-key"),
    path("usage/keys/new/", views.key_create, name="usage-key-create"),
    path("usage/keys/<int:key_id>/secret/", views.key_secret, name="usage-key-secret"),
    path("usage/keys/<int:key_id>/rotate/", views.key_rotate, name="usage-key-rotate"),
    path("usage/keys/<int:key_id>/revoke/", views.key_revoke, name="usage-key-revoke"),
    path("usage/log/", views.request_log, name="usage-log"),
    path("usage/log/<str:row_id>/", views.request_log_row, name="usage-log-row"),
    path("usage/log.csv", views.request_log_csv, name="usage-log-csv"),
]
