"""Checked by mypy --strict (see test_typing.py): decorated functions keep their signatures.

Never imported by pytest as a test; ``reveal_type`` lines are compared with mypy's output.
"""

from __future__ import annotations

from typing import assert_type, reveal_type

from sandboxed import NoNetwork, ReadOnly, sandboxed


@sandboxed
def bare(x: int, y: str = "a") -> list[str]:
    return [y] * x


@sandboxed()
def empty_call(x: int) -> int:
    return x


@sandboxed(NoNetwork, ReadOnly, CPUQuota=0.2, User="nobody")
def with_options(blob: bytes, *, strict: bool = False) -> dict[str, int]:
    return {"n": len(blob)}


@sandboxed(NoNetwork | ReadOnly)
def with_composed_preset(x: float) -> float:
    return x


@sandboxed(MemoryMax="64M")
async def fetch(n: int) -> str:
    return str(n)


class Service:
    @sandboxed(NoNetwork)
    def method(self, x: int) -> str:
        return str(x)

    @sandboxed(NoNetwork)
    @staticmethod
    def static(x: int) -> int:
        return x

    @classmethod
    @sandboxed(NoNetwork)
    def klass(cls, x: int) -> str:
        return cls.__name__ + str(x)


async def use_async() -> None:
    assert_type(await fetch(3), str)


assert_type(bare(2), list[str])
assert_type(bare(2, y="b"), list[str])
assert_type(empty_call(1), int)
assert_type(with_options(b"x", strict=True), dict[str, int])
assert_type(with_composed_preset(1.0), float)
assert_type(Service().method(1), str)
assert_type(Service.static(1), int)
assert_type(Service.klass(1), str)

reveal_type(bare)
reveal_type(with_options)
reveal_type(fetch)

# Wrong calls are type errors, as they would be without the decorator.
bare("two")  # E: arg-type
with_options(b"x", True)  # E: call-arg
Service().method("x")  # E: arg-type
