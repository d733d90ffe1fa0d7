"""Translation between the APIs clients speak and the chat-completions API every upstream speaks (issue 13).

One module per client API, each pure: plain dicts in, plain dicts or SSE bytes out, no Django, no HTTP, no I/O.
"""
