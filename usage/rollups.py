"""Usage rollups maintained as request-log rows are written (see usage.writer). Placeholder until the usage
pages land: the writer calls `add_to_rollups(rows)` inside its transaction."""


def add_to_rollups(rows: list[dict]) -> None:
    return None
