"""Every committed change to routing config bumps the shared config version (routing/config_version.py); API keys
and quotas are watched by apikeys/signals.py."""

from routing.config_version import watch
from routing.models import Alias, Policy, Provider, Route, RoutingSettings

watch(Provider, Alias, Route, Policy, RoutingSettings)
