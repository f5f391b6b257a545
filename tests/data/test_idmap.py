from __future__ import annotations

import numpy as np
import pytest

from tastebud.data.idmap import IdMap
from tastebud.errors import InvalidInputError, UnknownIdError


def test_from_values_sorts_comparable_ids_and_maps_both_ways():
    ids = IdMap.from_values([30, 10, 20, 10])
    assert len(ids) == 3
    assert ids.ids.tolist() == [10, 20, 30]
    assert ids.to_index([20, 30, 10]).tolist() == [1, 2, 0]
    assert ids.to_ids([2, 0]).tolist() == [30, 10]
    assert 20 in ids and 99 not in ids


def test_string_ids_and_mixed_ids_keep_first_seen_order():
    assert IdMap.from_values(["b", "a", "b"]).ids.tolist() == ["a", "b"]
    mixed = IdMap.from_values(["x", 1, "y"])  # not comparable: first-seen order
    assert mixed.ids.tolist() == ["x", 1, "y"]
    assert mixed.to_index([1, "y"]).tolist() == [1, 2]


def test_unknown_policy_raise_names_ids_and_ignore_gives_minus_one():
    ids = IdMap.from_values(["a", "b"])
    with pytest.raises(UnknownIdError, match="unknown user: 'zz'"):
        ids.to_index(["a", "zz"], what="user")
    assert ids.to_index(["a", "zz"], on_unknown="ignore").tolist() == [0, -1]
    with pytest.raises(InvalidInputError):
        ids.to_index(["a"], on_unknown="skip")  # type: ignore[arg-type]


def test_extend_keeps_existing_indices():
    ids = IdMap.from_values([5, 7])
    bigger = ids.extend([7, 9, 1])
    assert bigger.ids.tolist() == [5, 7, 9, 1]
    assert bigger.to_index([5, 7]).tolist() == [0, 1]
    assert ids.extend([5]) is ids


def test_rejects_duplicates_missing_and_out_of_range():
    with pytest.raises(InvalidInputError, match="distinct"):
        IdMap([1, 1])
    with pytest.raises(InvalidInputError):
        IdMap.from_values([1.5, 2.0])
    with pytest.raises(InvalidInputError, match="out of range"):
        IdMap.from_values([1, 2]).to_ids([2])


@pytest.mark.parametrize("values", [[3, 1, 2], ["b", "a"], ["x", 1]])
def test_state_round_trip(values):
    ids = IdMap.from_values(values)
    array, plain = ids.to_state()
    if array is not None:
        assert array.dtype != object  # savez-able without pickle
    assert IdMap.from_state(array, plain) == ids


def test_numpy_int_ids_are_found_by_python_ints():
    ids = IdMap(np.array([100, 200], dtype=np.int32))
    assert ids.to_index([200]).tolist() == [1]


def test_text_and_integer_spellings_of_an_id_match():
    ints = IdMap.from_values([7, 8])
    assert ints.to_index(["7", 8, "07", "x"], on_unknown="ignore").tolist() == [0, 1, -1, -1]
    texts = IdMap.from_values(["7", "a"])
    assert texts.to_index([7, "a"]).tolist() == [0, 1]


def test_missing_ids_are_refused():
    with pytest.raises(InvalidInputError, match="missing"):
        IdMap.from_values([1, 2]).to_index([None])
    with pytest.raises(InvalidInputError, match="missing"):
        IdMap.from_values([1, 2]).to_index([float("nan")])
