"""Every committed change to an API key, a quota or a user's limits bumps the shared config version
(routing/config_version.py), so each worker's snapshot sees it."""

from apikeys.models import APIKey, Quota, UserLimits, UserQuota
from routing.config_version import watch

watch(APIKey, Quota, UserLimits, UserQuota)
