"""Every committed change to an API key or a quota bumps the shared config version (routing/config_version.py), so
each worker's snapshot sees it."""

from apikeys.models import APIKey, Quota
from routing.config_version import watch

watch(APIKey, Quota)
