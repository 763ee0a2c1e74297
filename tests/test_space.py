"""The Adelaide codec (SPEC 3.1): ranges, forms, round trips, sampling and mutation. No torch."""

from __future__ import annotations

import random

import pytest

from nascli.config import DEFAULT_OPS
from nascli.spaces.adelaide import DIGITS, LENGTH, AdelaideSpace, EncodingError

TWELVE_OPS = [f"op{i}" for i in range(12)]  # names don't matter to the codec, only their number


def expected_ranges(k: int) -> list[int]:
    """SPEC 3.1's table, written out position by position."""
    return [k, 2, 2, k, k, 5, 5, k, k, 8, 8, k, k, 4, 4, 5, 5, 6, 6]


@pytest.mark.parametrize("k", [7, 12])
def test_ranges_match_spec(k):
    space = AdelaideSpace([f"op{i}" for i in range(k)])
    assert list(space.ranges) == expected_ranges(k)


@pytest.mark.parametrize("ops", [DEFAULT_OPS, TWELVE_OPS])
def test_round_trip_over_random_codes(ops):
    space = AdelaideSpace(ops)
    rng = random.Random(0)
    for _ in range(500):
        digits = [rng.randrange(hi) for hi in space.ranges]
        text = space.format(digits)
        assert text.startswith("_") and len(text) == LENGTH + 1
        assert space.parse(text) == tuple(digits)
        assert space.encode(space.decode(text)) == text
        assert space.encode(space.decode(text).to_list()) == text


def test_decode_follows_flat_order():
    # inputs of each node come before its two ops
    space = AdelaideSpace(DEFAULT_OPS)
    arch = space.decode("_3104242330135120344")
    assert arch.to_list() == [[3, [1, 0, 4, 2], [4, 2, 3, 3], [0, 1, 3, 5]], [[1, 2], [0, 3], [4, 4]]]


def test_accepts_trailing_and_bare_forms_and_writes_leading():
    space = AdelaideSpace(DEFAULT_OPS)
    lead = "_3104242330135120344"
    assert space.canonical("3104242330135120344_") == lead
    assert space.canonical("3104242330135120344") == lead
    assert space.canonical(lead) == lead


def test_base36_digits_beyond_nine_for_many_ops():
    space = AdelaideSpace(TWELVE_OPS)
    text = "_b" + "0" * 18  # op 11 at position 0
    assert space.decode(text).op1 == 11
    with pytest.raises(EncodingError, match="position 0"):
        AdelaideSpace(DEFAULT_OPS).parse(text)  # 11 is out of range with 7 ops


@pytest.mark.parametrize("text, match", [
    ("_310424233013512034", "18 symbols"),
    ("_31042423301351203444", "20 symbols"),
    ("_3104242330135120!44", "position 16 has '!'"),
    ("_3504242330135120344", r"position 1 \(node 1 input a\) is 5, legal 0..1"),
    ("_3104242330135120364", r"position 17 \(merge 2 input a\) is 6, legal 0..5"),
    ("_9104242330135120344", r"position 0 .* legal 0..6 \(7 ops"),
])
def test_invalid_encodings_name_the_position(text, match):
    with pytest.raises(EncodingError, match=match):
        AdelaideSpace(DEFAULT_OPS).parse(text)


@pytest.mark.parametrize("ops", [DEFAULT_OPS, TWELVE_OPS])
def test_samples_and_mutations_validate_and_mutation_changes_one_position(ops):
    space = AdelaideSpace(ops)
    rng = random.Random(1)
    seen_positions = set()
    for _ in range(300):
        parent = space.sample(rng)
        space.parse(parent)  # raises if invalid
        child, pos = space.mutate(parent, rng)
        space.parse(child)
        diff = [i for i, (a, b) in enumerate(zip(parent[1:], child[1:])) if a != b]
        assert diff == [pos]
        seen_positions.add(pos)
    assert seen_positions == set(range(LENGTH))  # every position gets mutated sometimes


def test_sampling_covers_every_legal_value():
    space = AdelaideSpace(TWELVE_OPS)
    rng = random.Random(2)
    values = [set() for _ in range(LENGTH)]
    for _ in range(2000):
        for i, d in enumerate(space.parse(space.sample(rng))):
            values[i].add(d)
    assert [len(v) for v in values] == list(space.ranges)


def test_cell_outputs_and_head_inputs():
    space = AdelaideSpace(DEFAULT_OPS)
    # nodes read f1 (node 1), f4 and f2 (node 2), f7 and f0 (node 3): loose ends are only 10
    arch = space.decode("_0" + "1100" + "4200" + "7000" + "000000")
    assert arch.cell_outputs() == [10]
    # nodes read only x: every one of 1, 4, 7, 10 is a loose end
    arch = space.decode("_0" + "0000" + "0000" + "0000" + "000000")
    assert arch.cell_outputs() == [1, 4, 7, 10]
    # merges [[0,1],[4,2],[3,3]]: 4 consumed by merge 1, 5 unconsumed, 6 always
    arch = space.decode("_" + "0" * 13 + "014233")
    assert arch.head_inputs() == [5, 6]
    assert arch.used_taps() == [0, 1, 2, 3]
    # merges [[1,1],[4,4],[5,4]]: 4 and 5 consumed -> head reads only 6; only tap 1 read
    arch = space.decode("_" + "0" * 13 + "114454")
    assert arch.head_inputs() == [6]
    assert arch.used_taps() == [1]


def test_space_limits():
    with pytest.raises(EncodingError):
        AdelaideSpace([])
    with pytest.raises(EncodingError):
        AdelaideSpace([f"op{i}" for i in range(len(DIGITS) + 1)])
    assert AdelaideSpace([f"op{i}" for i in range(36)]).ranges[0] == 36
