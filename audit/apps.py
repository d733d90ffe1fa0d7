from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self):
        from audit import history

        # Every app's models are loaded by now, so the audited ones and their SET_NULL relations are known.
        history.record_set_null_relations()
