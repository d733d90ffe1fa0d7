"""The audit trail (issue 15): who changed which provider, alias, route, policy, setting, key or quota, when, and
what changed, recorded with django-simple-history (docs/observability.md, "Audit trail").

`audit.history` is what the models use (a floor of its own, just above the ground: docs/architecture.md);
`audit.views` is the admin's list of all recent changes, an entrance like the other admins.
"""
