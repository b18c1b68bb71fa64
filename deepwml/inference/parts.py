"""Split a large input set across processes or machines (cluster array jobs): no overlap, no gap."""
from __future__ import annotations

from typing import Callable, List, Sequence, TypeVar

from deepwml.utils.errors import DeepWMLError

T = TypeVar("T")


def check_part(num_parts: int, part_id: int) -> None:
    """Reject impossible --num-parts/--part-id combinations with a message that says what is allowed."""
    if num_parts < 1:
        raise DeepWMLError(f"--num-parts must be >= 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise DeepWMLError(f"--part-id must lie in 0..{num_parts - 1} for --num-parts {num_parts}, got {part_id}")


def select_part(items: Sequence[T], num_parts: int, part_id: int, key: Callable[[T], str]) -> List[T]:
    """Items of part ``part_id``: every ``num_parts``-th item of the list sorted by ``key``, starting at ``part_id``.

    Sorting first makes the split independent of the order the file system lists files in, so every process of an
    array job computes the same partition; dealing round-robin balances parts when case sizes drift along the list.
    """
    check_part(num_parts, part_id)
    return sorted(items, key=key)[part_id::num_parts]
