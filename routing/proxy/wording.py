"""OpenAI's wording for a request body's field errors ("Invalid type for 'n': expected an integer, but got a string
instead."), shared by the chat-completions validator (validation.py) and the Responses translation
(translation/responses.py), which raise their own error classes with these messages.

Pure: standard library only, so the translation modules stay free of Django.
"""

from __future__ import annotations

from typing import Any


def json_type(value: Any) -> str:
    """The JSON type of a decoded value, worded as OpenAI's errors word it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def wrong_type_message(param: str, expected: str, value: Any) -> str:
    return f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead."


def invalid_value_message(value: Any, supported: tuple[str, ...]) -> str:
    """`value` is not one of `supported`: the message names them all ('a', 'b', and 'c')."""
    if len(supported) == 1:
        names = f"'{supported[0]}'"
    else:
        names = ", ".join(f"'{s}'" for s in supported[:-1]) + f", and '{supported[-1]}'"
    text = str(value)
    shown = text if len(text) <= 40 else text[:40] + "..."
    return f"Invalid value: '{shown}'. Supported values are: {names}."
