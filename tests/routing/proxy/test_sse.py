"""routing/proxy/sse.py: incremental SSE parsing."""

from routing.proxy.sse import SSEParser, event


def test_events_split_across_chunks_come_out_whole():
    p = SSEParser()
    assert p.feed(b'data: {"a"') == []
    assert p.feed(b": 1}\n") == []
    assert p.feed(b"\ndata: [DONE]\n\n") == [b'{"a": 1}', b"[DONE]"]


def test_crlf_comments_and_other_fields_are_handled():
    p = SSEParser()
    assert p.feed(b": keep-alive\r\n\r\nevent: x\r\ndata: 1\r\ndata: 2\r\n\r\n") == [b"1\n2"]


def test_crlf_cut_between_reads_does_not_split_an_event():
    p = SSEParser()
    assert p.feed(b"data: 1\r") == []
    assert p.feed(b"\ndata: 2\r\n\r\n") == [b"1\n2"]


def test_lone_cr_line_endings_still_end_events():
    p = SSEParser()
    assert p.feed(b"data: 1\r\r") == []  # the second CR may yet be the start of a CRLF
    assert p.feed(b"data: 2\r\r\r") == [b"1", b"2"]
    assert p.flush() == []


def test_flush_returns_a_last_event_without_blank_line():
    p = SSEParser()
    assert p.feed(b"data: tail") == []
    assert p.flush() == [b"tail"]


def test_event_writer():
    assert event(b"{}") == b"data: {}\n\n"
