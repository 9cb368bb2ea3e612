"""Pure pieces of the RDS database: reading a class's storage range as the lookup hands it over."""

from __future__ import annotations

import pytest

from lib.rds import storage_ranges


def test_a_storage_range_reads_from_one_object_or_from_a_list_of_them() -> None:
    assert storage_ranges({"min": "20", "max": "32000", "step": "5"}) == [(20, 32000)]
    assert storage_ranges([{"min": "20", "max": "32000", "step": "5"}]) == [(20, 32000)]
    assert storage_ranges([{"min": "20", "max": "2000"}, {"min": "50", "max": "6000"}]) == [(20, 2000), (50, 6000)]
    assert storage_ranges(None) == []


def test_sizes_written_with_a_decimal_point_read_as_whole_gib() -> None:
    assert storage_ranges({"min": "20.0", "max": "32000.0", "step": "5.0"}) == [(20, 32000)]
    assert storage_ranges({"min": 20.0, "max": 6000}) == [(20, 6000)]


@pytest.mark.parametrize("value", ["20-32000", {"min": "twenty", "max": "30"}, [{"max": "30"}]])
def test_anything_else_is_refused_rather_than_guessed(value: object) -> None:
    with pytest.raises(ValueError, match="storage"):
        storage_ranges(value)
