def rows(
    data: bytes | bytearray | memoryview, events: bool, /
) -> tuple[list[tuple[str, ...] | None], int] | None:
    """Each line's canonical LOGEMU row, the regex's groups and the packet key (None where the
    regex would not match, or the line is not ASCII) and the number of Nones; None when data
    holds a carriage return."""
