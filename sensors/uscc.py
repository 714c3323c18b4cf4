"""Unified social credit code 统一社会信用代码 (GB 32100-2015): the check character.

Eighteen characters from a 31-character alphabet (no I, O, S, V, Z); positions 3–8 are a
GB/T 2260 region code; the last is a mod-31 check character over the first seventeen.
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
# W_i = 3^(i-1) mod 31 for positions 1..17.
WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
LENGTH = 18


def check_char(first17: str) -> str:
    """The check character (position 18) of a code's first seventeen characters."""
    if len(first17) != LENGTH - 1:
        raise ValueError(f"expected 17 characters, got {len(first17)}")
    bad = _outside_alphabet(first17)
    if bad:
        raise ValueError(f"character {bad!r} not in the code alphabet {ALPHABET}")
    total = sum(_VALUE[c] * w for c, w in zip(first17, WEIGHTS, strict=False))
    # 31 - (S mod 31) is 31 when S is a multiple of 31; the standard maps that to '0'.
    return ALPHABET[(31 - total % 31) % 31]


def validate(code: str) -> str:
    """Return `code` if it is a well-formed credit code; raise ValueError saying what is wrong."""
    if not isinstance(code, str):
        raise ValueError(f"expected a string, got {type(code).__name__}")
    if len(code) != LENGTH:
        raise ValueError(f"length {len(code)}, expected {LENGTH}")
    bad = _outside_alphabet(code)
    if bad:
        raise ValueError(f"character {bad!r} not in the code alphabet {ALPHABET}")
    if not code[2:8].isdigit():
        raise ValueError(f"positions 3-8 must be a 6-digit region code, got {code[2:8]!r}")
    expected = check_char(code[:17])
    if code[17] != expected:
        raise ValueError(f"wrong check character: expected {expected} got {code[17]}")
    return code


def is_valid(code: str) -> bool:
    """True if `code` passes every check of `validate`."""
    try:
        validate(code)
    except ValueError:
        return False
    return True


def _outside_alphabet(text: str) -> str | None:
    """The first character of `text` not in the alphabet, if any."""
    return next((c for c in text if c not in _VALUE), None)
