"""GB 32100 unified social credit code: check character and validation."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensors.uscc import ALPHABET, WEIGHTS, check_char, is_valid, validate

VECTORS = ["91110108551385082Q", "91110000600037341L"]
# A body whose weighted sum is a multiple of 31: 31 - 0 = 31 must map to '0'.
ZERO_CASE = "913205068569569660"

bodies = st.tuples(
    st.text(ALPHABET, min_size=2, max_size=2),
    st.text("0123456789", min_size=6, max_size=6),
    st.text(ALPHABET, min_size=9, max_size=9),
).map("".join)


@pytest.mark.parametrize("code", VECTORS)
def test_published_vectors(code):
    assert check_char(code[:17]) == code[17]
    assert is_valid(code)
    assert validate(code) == code


def test_weights_are_powers_of_three_mod_31():
    assert WEIGHTS == (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def test_31_maps_to_zero():
    body = ZERO_CASE[:17]
    assert sum(ALPHABET.index(c) * w for c, w in zip(body, WEIGHTS, strict=False)) % 31 == 0
    assert check_char(body) == "0"
    assert is_valid(ZERO_CASE)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("91110108551385082", "length 17"),
        ("91110108551385082QQ", "length 19"),
        ("", "length 0"),
        ("91110108551385O82Q", "'O' not in the code alphabet"),  # letter O, not zero
        ("9111010855138508iQ", "'i' not in the code alphabet"),  # lower case is not accepted
        ("911101A8551385082Q", "positions 3-8"),
        ("91110108551385082R", "expected Q got R"),
        ("91110000600037341M", "expected L got M"),
    ],
)
def test_validate_names_the_reason(code, reason):
    with pytest.raises(ValueError, match=reason):
        validate(code)
    assert not is_valid(code)


def test_not_a_string():
    with pytest.raises(ValueError, match="expected a string"):
        validate(91110108551385082)  # type: ignore[arg-type]
    assert not is_valid(None)  # type: ignore[arg-type]


def test_check_char_rejects_bad_bodies():
    with pytest.raises(ValueError, match="17 characters"):
        check_char("9111010855138508")
    with pytest.raises(ValueError, match="not in the code alphabet"):
        check_char("9111010855138508Z")


@given(bodies)
def test_round_trip(body):
    code = body + check_char(body)
    assert (
        ALPHABET.index(code[17])
        == (31 - sum(ALPHABET.index(c) * w for c, w in zip(body, WEIGHTS, strict=False)) % 31) % 31
    )
    assert is_valid(code)


@given(bodies, st.integers(0, 16), st.integers(1, 30))
def test_any_single_substitution_is_caught(body, pos, shift):
    # Weights are non-zero mod the prime 31, so changing one character always changes the sum.
    code = body + check_char(body)
    changed = ALPHABET[(ALPHABET.index(code[pos]) + shift) % 31]
    assert not is_valid(code[:pos] + changed + code[pos + 1 :])
