from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"

    def ready(self):
        from routing import signals  # noqa: F401  (bumps the config version on every change)
