"""Stored Responses API responses (`store: true`), so `previous_response_id` can continue them and
GET/DELETE /v1/responses/{id} can read and remove them (docs/api.md, "Responses")."""
