def rows(data: bytes, events: bool, /) -> tuple[list[tuple[str, ...] | None], int] | None:
    """Each line's canonical LOGEMU row (None where logscan's regex would not match, or the
    line is not ASCII) and the number of Nones; None when data holds a carriage return."""
