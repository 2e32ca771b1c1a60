"""Small stand-ins for standard modules the unit's start-up must not import."""

from __future__ import annotations


class suppress:
    """contextlib.suppress without importing contextlib (functools, collections...)
    into the unit's start-up."""

    def __init__(self, *kinds: type[BaseException]) -> None:
        self.kinds = kinds

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        return kind is not None and issubclass(kind, self.kinds)  # type: ignore[arg-type]
