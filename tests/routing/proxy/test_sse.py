"""routing/proxy/sse.py: incremental SSE parsing."""

from routing.proxy.sse import SSEParser, event


def test_events_split_across_chunks_come_out_whole():
    p = SSEParser()
    assert p.feed(b'data: {"a"') == []
    assert p.feed(b': 1}\n') == []
    assert p.feed(b'\ndata: [DONE]\n\n') == [b'{"a": 1}', b"[DONE]"]


def test_crlf_comments_and_other_fields_are_handled():
    p = SSEParser()
    assert p.feed(b": keep-alive\r\n\r\nevent: x\r\ndata: 1\r\ndata: 2\r\n\r\n") == [b"1\n2"]


def test_flush_returns_a_last_event_without_blank_line():
    p = SSEParser()
    assert p.feed(b"data: tail") == []
    assert p.flush() == [b"tail"]


def test_event_writer():
    assert event(b"{}") == b"data: {}\n\n"
