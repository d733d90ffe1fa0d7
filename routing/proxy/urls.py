from django.urls import path, re_path

from routing.proxy import api

urlpatterns = [
    path("chat/completions", api.ChatCompletionsView.as_view()),
    path("models", api.ModelsView.as_view()),
    path("responses", api.ResponsesView.as_view()),
    path("responses/<str:response_id>", api.ResponseDetailView.as_view()),
    path("messages", api.MessagesView.as_view()),
    path("messages/count_tokens", api.CountTokensView.as_view()),
    path("embeddings", api.EmbeddingsView.as_view()),
    path("models/<path:model_id>", api.ModelView.as_view()),
    path("completions", api.CompletionsView.as_view()),
    re_path(r"^.*$", api.unknown_endpoint),
]
