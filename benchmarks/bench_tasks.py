"""The functions the benchmarks run: importable by reference in every process."""

from __future__ import annotations


def noop(*args: object) -> None:
    """Nothing: the cost of a call is all overhead."""
    return None


def echo(value: object) -> object:
    """Return the argument: a round trip of its data."""
    return value


def square(x: int) -> int:
    """A small task."""
    return x * x


def square_chunk(xs: list[int]) -> list[int]:
    """A batch of small tasks in one call."""
    return [x * x for x in xs]


def modules() -> list[str]:
    """The modules loaded in the process that runs this."""
    import sys

    return sorted(sys.modules)
