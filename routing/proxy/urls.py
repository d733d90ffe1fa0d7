from django.urls import path, re_path

from routing.proxy import api

urlpatterns = [
    path("chat/completions", api.ChatCompletionsView.as_view()),
    path("models", api.ModelsView.as_view()),
    path("completions", api.CompletionsView.as_view()),
    re_path(r"^.*$", api.unknown_endpoint),
]
