"""One stored Responses API response: the `response` object the client got and the conversation items (input then
output, in Responses item form) that `previous_response_id` continues. Scoped to the key that created it."""

from django.db import models


class StoredResponse(models.Model):
    id = models.CharField(primary_key=True, max_length=64)  # resp_…, as the client saw it
    api_key = models.ForeignKey("apikeys.APIKey", on_delete=models.CASCADE, related_name="stored_responses")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    response = models.JSONField()
    items = models.JSONField()  # every item of the conversation so far: previous items, this input, this output

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.id
