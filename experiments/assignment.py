"""Deterministic variant assignment following the GrowthBook SDK spec.

Pure Python + numpy; this module must never import Django (it is used by
benchmarks, offline analysis and the web app alike).

Everything here reproduces the public GrowthBook SDK specification -- the
functions ``hash``, ``getBucketRanges``, ``chooseVariation``, ``inNamespace``
and ``getEqualWeights`` of the JS SDK (``packages/sdk-js/src/util.ts`` in the
``growthbook/growthbook`` repository) and of the Python SDK
(``growthbook/core.py``), verified against the published spec cases
(``packages/sdk-js/test/cases.json``, copied into
``tests/experiments/growthbook_cases.json``) and against the installed
``growthbook`` package, id by id.

Formulas (``fnv`` is FNV-1a 32 bit, see :func:`fnv1a32`)::

    hash v2:  n = (fnv(str(fnv(seed + value))) % 10000) / 10000
    hash v1:  n = (fnv(value + seed) % 1000) / 1000
    ranges:   cumulative = 0
              for w in weights:
                  start = cumulative; cumulative += w
                  range = [start, start + coverage * w)
    variant:  first i with ranges[i].start <= n < ranges[i].end, else -1
    namespace(id, start, end):  start <= hash("__" + id, value, 1) < end

Non-ASCII hash values
---------------------
GrowthBook's JS SDK hashes ``str.charCodeAt(i)``, i.e. **UTF-16 code
units**, not UTF-8 bytes. The installed Python SDK (``growthbook`` 4.x,
``core.fnv1a32``) does exactly the same (``s.encode("utf-16-le",
"surrogatepass")``, one 16-bit unit per step); older Python SDKs used
``ord(c)`` (code points), which agrees with UTF-16 for every BMP character
and differs only for astral characters (e.g. emoji), which JS sees as a
surrogate pair. We follow JS + the current Python SDK (UTF-16 code units,
lone surrogates hashed as themselves) so that an id is bucketed identically
by our server, by a browser using the JS SDK, and by the Python SDK. Each
16-bit unit is XORed into the state whole (not byte by byte). For ASCII --
the overwhelmingly common case -- code unit == byte == code point, so all
conventions agree. The published spec cases only contain ASCII; the
non-ASCII behaviour is pinned by tests against the installed SDK.

Python's built-in ``hash()`` is salted per process (``PYTHONHASHSEED``) and
must never be used for assignment; this module shadows the name ``hash``
with the GrowthBook hash on purpose (call it as ``assignment.hash(...)``).
"""

from __future__ import annotations

import math
import numbers
import sys
from array import array
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "FNV32_OFFSET_BASIS",
    "FNV32_PRIME",
    "HOLDOUT_SEED",
    "NO_VARIANT",
    "WEIGHT_SUM_MAX",
    "WEIGHT_SUM_MIN",
    "BucketRange",
    "assign",
    "assign_bulk",
    "choose_variation",
    "choose_variation_bulk",
    "fnv1a32",
    "get_bucket_ranges",
    "get_equal_weights",
    "hash",
    "hash_bulk",
    "in_holdout",
    "in_holdout_bulk",
    "in_namespace",
    "in_namespace_bulk",
]

# FNV-1a 32 bit parameters (http://www.isthe.com/chongo/tech/comp/fnv/).
FNV32_OFFSET_BASIS: Final[int] = 0x811C9DC5
FNV32_PRIME: Final[int] = 0x01000193
_MASK32: Final[int] = 0xFFFFFFFF

# getBucketRanges: weight vectors whose sum is outside [0.99, 1.01] are
# replaced with equal weights (spec case "weights sum almost equals 1").
WEIGHT_SUM_MIN: Final[float] = 0.99
WEIGHT_SUM_MAX: Final[float] = 1.01

#: chooseVariation's "not in any range" result; also the "no variant" marker
#: of the vectorized functions.
NO_VARIANT: Final[int] = -1

#: Seed of the global holdout (see :func:`in_holdout`). Experiment seeds are
#: experiment keys; never give an experiment this key.
HOLDOUT_SEED: Final[str] = "__global_holdout__"

# Hash version 2 takes the result modulo 10000, version 1 modulo 1000.
_HASH_MODULUS: Final[dict[int, int]] = {1: 1000, 2: 10000}

BucketRange = tuple[float, float]

_NEEDS_BYTESWAP: Final[bool] = sys.byteorder != "little"


# ---------------------------------------------------------------------------
# Scalar path
# ---------------------------------------------------------------------------


def _utf16_units(s: str) -> bytes | memoryview | array[int]:
    """The UTF-16 code units of ``s`` (JS ``charCodeAt``), lone surrogates kept."""
    if s.isascii():
        return s.encode("ascii")  # one byte == one code unit
    data = s.encode("utf-16-le", "surrogatepass")
    if _NEEDS_BYTESWAP:  # pragma: no cover - big-endian hosts only
        units = array("H", data)
        units.byteswap()
        return units
    return memoryview(data).cast("H")  # native == little-endian here


def _fnv_units(state: int, units: bytes | memoryview | array[int]) -> int:
    """Continue an FNV-1a 32 state over a sequence of code units.

    Per unit: ``state = ((state ^ unit) * FNV32_PRIME) mod 2**32``. This is
    the scalar hot path, hence literal constants and 4 units per Python-level
    step with a single ``mod 2**32``: the low 32 bits of ``(h ^ u) * p``
    depend only on the low 32 bits of ``h`` (``u < 2**16``), so reducing
    once per 4 multiplies gives the same state (ints stay below 2**132).
    """
    it = iter(units)
    for a, b, c, d in zip(it, it, it, it, strict=False):
        # FNV32_PRIME = 16777619, _MASK32 = 4294967295; note * binds tighter than ^.
        state = (((state ^ a) * 16777619 ^ b) * 16777619 ^ c) * 16777619 ^ d
        state = (state * 16777619) & 4294967295
    for u in units[len(units) & ~3 :]:
        state = ((state ^ u) * 16777619) & 4294967295
    return state


def _fnv1a32_update(state: int, s: str) -> int:
    """Continue an FNV-1a 32 state over the UTF-16 code units of ``s``.

    FNV-1a is streaming: ``fnv(a + b) == _fnv1a32_update(fnv(a), b)``, which
    lets us hash the (constant) seed once per experiment.
    """
    return _fnv_units(state, _utf16_units(s))


def fnv1a32(s: str) -> int:
    """FNV-1a 32 bit over the UTF-16 code units of ``s``.

    Spec: ``hashFnv32a`` (JS SDK) / ``fnv1a32`` (Python SDK):
    ``h = 0x811C9DC5; for unit in s: h = ((h ^ unit) * 0x01000193) mod 2**32``.
    See the module docstring for the non-ASCII convention.
    """
    return _fnv_units(FNV32_OFFSET_BASIS, _utf16_units(s))


@lru_cache(maxsize=4096)
def _seed_state(seed: str) -> int:
    """FNV-1a state after the seed prefix (hash v2 hashes ``seed + value``)."""
    return fnv1a32(seed)


def _build_digit_prefix_states() -> dict[str, int]:
    # The decimal string of a uint32 has no leading zeros (except "0"), so
    # each of its prefixes of <= 4 characters is str(k) for some k < 10000.
    return {str(k): fnv1a32(str(k)) for k in range(10_000)}


#: FNV-1a states of every possible 1-4 digit prefix of ``str(uint32)``: the
#: second v2 pass starts from a fixed state, so its first 4 steps are a
#: table look-up (10,000 entries, built once at import in a few ms).
_DIGIT_PREFIX_STATE: Final[dict[str, int]] = _build_digit_prefix_states()


def _hash_v2(seed: str, value: str) -> float:
    """``(fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000``.

    The seed's FNV state is cached (FNV is streaming) and the first 4 digits
    of the second pass come from :data:`_DIGIT_PREFIX_STATE`.
    """
    units = value.encode("ascii") if value.isascii() else _utf16_units(value)
    digits = str(_fnv_units(_seed_state(seed), units))
    state = _DIGIT_PREFIX_STATE[digits[:4]]
    for u in digits[4:].encode("ascii"):
        state = ((state ^ u) * 16777619) & 4294967295  # FNV32_PRIME, _MASK32
    return (state % 10000) / 10000


def hash(seed: str, value: str, version: int = 2) -> float | None:
    """GrowthBook ``hash(seed, value, version)``: a bucket in ``[0, 1)``.

    * v2: ``(fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000``
    * v1: ``(fnv1a32(value + seed) % 1000) / 1000``
    * any other version: ``None`` (spec case ``["abc", "def", 99, null]``).

    This is *not* Python's built-in ``hash()`` (which is salted per process).
    """
    if version == 2:
        return _hash_v2(seed, value)
    if version == 1:
        return (_fnv1a32_update(fnv1a32(value), seed) % 1000) / 1000
    return None


def get_equal_weights(num_variations: int) -> list[float]:
    """Spec ``getEqualWeights``: ``[1/n] * n``; ``[]`` for ``n < 1``."""
    if num_variations < 1:
        return []
    return [1 / num_variations] * num_variations


def _is_valid_weights(weights: Sequence[float] | None, num_variations: int) -> bool:
    """Spec weight check: one weight per variation, summing to ~1.

    Like the installed Python SDK (``_is_valid_weight_vector``), weights must
    also be finite, non-negative real numbers (bools excluded): an invalid
    vector could otherwise produce inverted ranges. The JS SDK only checks
    the length and the sum; the two agree on every vector GrowthBook emits.
    """
    if weights is None or len(weights) != num_variations:
        return False
    try:
        for w in weights:
            if isinstance(w, bool) or not isinstance(w, numbers.Real):
                return False
            if not math.isfinite(w) or w < 0:
                return False
        return WEIGHT_SUM_MIN <= sum(weights) <= WEIGHT_SUM_MAX
    except OverflowError:  # ints too large for a float
        return False


def get_bucket_ranges(
    num_variations: int,
    coverage: float = 1.0,
    weights: Sequence[float] | None = None,
) -> list[BucketRange]:
    """Spec ``getBucketRanges``: one half-open ``[start, end)`` per variation.

    ``coverage`` is clamped to ``[0, 1]``; invalid ``weights`` (wrong length,
    sum outside ``[0.99, 1.01]``, negative/non-finite) fall back to equal
    weights. Each variation's range starts at the cumulative weight of the
    previous variations and covers ``coverage * weight`` of it, so lowering
    coverage shrinks every range towards its start (ids only ever move
    between "none" and their variant). The float operations are done in the
    SDK's order (``start + coverage * w``; ``cumulative += w``) so the
    ranges are bit-identical to the SDK's.
    """
    # Clamp to [0, 1]; max/min keep NaN as NaN (no range then matches), as
    # the SDK's ``if coverage < 0`` / ``if coverage > 1`` do.
    coverage = min(max(coverage, 0), 1)
    if not _is_valid_weights(weights, num_variations):
        weights = get_equal_weights(num_variations)
    assert weights is not None
    cumulative: float = 0
    ranges: list[BucketRange] = []
    for w in weights:
        start = cumulative
        cumulative += w
        ranges.append((start, start + coverage * w))
    return ranges


@lru_cache(maxsize=1024)
def _cached_ranges(weights: tuple[float, ...], coverage: float) -> tuple[BucketRange, ...]:
    if len(weights) < 2:
        raise ValueError("an experiment needs at least two variations")
    return tuple(get_bucket_ranges(len(weights), coverage, weights))


_V2_BUCKETS: Final[int] = 10000
_TABLE_NONE: Final[int] = 0xFF  # "no variant" in a v2 bucket table


@lru_cache(maxsize=1024)
def _v2_bucket_table(weights: tuple[float, ...], coverage: float) -> bytes:
    """``table[k] = chooseVariation(k / 10000, ranges)`` for all 10000 v2 buckets.

    A v2 hash is always ``k / 10000`` for an integer ``k`` in ``[0, 10000)``,
    so precomputing the variant of every bucket (with the very same float
    comparisons) is exact and replaces the division and the range scan on
    the hot path. 0xFF marks "no variant"; 10 kB per (weights, coverage).
    Only used for fewer than 255 variations.
    """
    ranges = _cached_ranges(weights, coverage)
    table = bytearray(_V2_BUCKETS)
    for k in range(_V2_BUCKETS):
        v = choose_variation(k / _V2_BUCKETS, ranges)
        table[k] = _TABLE_NONE if v < 0 else v
    return bytes(table)


def choose_variation(n: float, ranges: Sequence[BucketRange]) -> int:
    """Spec ``chooseVariation``: index of the first range with ``start <= n < end``.

    Returns :data:`NO_VARIANT` (-1) when ``n`` is in no range (outside
    coverage). Empty ranges (``start == end``) never match.
    """
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return NO_VARIANT


def in_namespace(hash_value: str, namespace_id: str, start: float, end: float) -> bool:
    """Spec ``inNamespace``: ``start <= hash("__" + namespace_id, hash_value, 1) < end``.

    Namespaces are layers for mutual exclusion: experiments sharing a
    namespace id get disjoint ``[start, end)`` slices. Note that the spec uses
    hash **v1** here (1000 buckets) regardless of the experiment's version.
    """
    n = hash("__" + namespace_id, hash_value, 1)
    return n is not None and start <= n < end


def _check_percent(percent: float) -> None:
    if not 0 <= percent <= 100:  # also rejects NaN
        raise ValueError(f"holdout percent must be within [0, 100], got {percent!r}")


def in_holdout(hash_value: str, *, percent: float, seed: str = HOLDOUT_SEED) -> bool:
    """Stable membership in the global holdout group (``percent`` of customers).

    ``hash(seed, hash_value, 2) < percent / 100`` with the fixed
    :data:`HOLDOUT_SEED`: exactly GrowthBook's rollout-coverage check
    (``_isIncludedInRollout`` with ``coverage=percent/100``, ``hashVersion=2``)
    under a seed no experiment uses. Therefore membership

    * depends only on the id (not on any experiment, process or host),
    * is monotone in ``percent``: raising it only adds customers,
    * has 0.01 % resolution (v2 has 10000 buckets),
    * is independent of experiment assignment: the seed differs from every
      experiment key and v2 re-hashes the decimal string of the first FNV
      hash, decorrelating seeds that share a prefix.

    Empty ids are never in the holdout (as GrowthBook skips empty hash values).
    """
    _check_percent(percent)
    if not hash_value:
        return False
    n = hash(seed, hash_value, 2)
    return n is not None and n < percent / 100


def assign(
    *,
    seed: str,
    hash_value: str,
    weights: Sequence[float],
    coverage: float = 1.0,
    hash_version: int = 2,
) -> int | None:
    """Assign ``hash_value`` (a customer's ``external_id``) to a variant.

    Equivalent to GrowthBook's ``run(Experiment(key=seed, variations=...,
    weights=weights, coverage=coverage, hashVersion=hash_version))`` for an
    active experiment without targeting: ``len(weights)`` variations,
    ``chooseVariation(hash(seed, hash_value, v), getBucketRanges(...))``.

    Returns the variant index, or ``None`` when the id falls outside
    ``coverage``, is empty (GrowthBook never enrols an empty hash value), or
    the hash version is unknown. ``seed`` is normally the experiment key.

    Note the default: ``hash_version=2`` (10000 buckets, what GrowthBook's
    app emits), whereas the SDKs' ``Experiment`` defaults to the legacy,
    biased v1 (1000 buckets) when ``hashVersion`` is omitted -- pass
    ``hashVersion=2`` to the SDK to compare.

    Raises ``ValueError`` for fewer than two variations (GrowthBook silently
    skips such experiments; for us it is a configuration error).
    """
    key = tuple(weights)
    if hash_version == 2 and len(key) < _TABLE_NONE:
        table = _v2_bucket_table(key, coverage)  # raises for < 2 variations
        if not hash_value:
            return None
        # hash v2 inlined (per-request hot path; the tests pin it to hash()
        # and to the SDK id by id): fnv1a32(seed + value) from the cached
        # seed state, then fnv1a32 of its decimal string, first 4 digits
        # from a table.
        state = _seed_state(seed)
        units = hash_value.encode("ascii") if hash_value.isascii() else _utf16_units(hash_value)
        it = iter(units)
        for a, b, c, d in zip(it, it, it, it, strict=False):  # see _fnv_units
            state = (((state ^ a) * 16777619 ^ b) * 16777619 ^ c) * 16777619 ^ d
            state = (state * 16777619) & 4294967295
        for u in units[len(units) & ~3 :]:
            state = ((state ^ u) * 16777619) & 4294967295
        digits = str(state)
        state = _DIGIT_PREFIX_STATE[digits[:4]]
        for u in digits[4:].encode("ascii"):
            state = ((state ^ u) * 16777619) & 4294967295
        variant = table[state % 10000]
        return None if variant == _TABLE_NONE else variant
    ranges = _cached_ranges(key, coverage)  # raises for < 2 variations
    if not hash_value:
        return None
    n = hash(seed, hash_value, hash_version)
    if n is None:
        return None
    variant = choose_variation(n, ranges)
    return None if variant < 0 else variant


# ---------------------------------------------------------------------------
# Vectorized path (numpy)
# ---------------------------------------------------------------------------

_U32_PRIME: Final = np.uint32(FNV32_PRIME)


class _EncodedIds:
    """Hash values as one flat array of UTF-16 code units plus offsets.

    All ids are joined and encoded once (ASCII -> uint8, else UTF-16LE ->
    uint16); column ``j`` of the (virtual) padded id matrix is gathered as
    ``flat[offsets + j]`` and only counts for ids with ``lengths > j``. The
    flat buffer is zero-padded by ``max_len`` so that gather never goes out
    of bounds.
    """

    __slots__ = ("flat", "lengths", "max_len", "min_len", "offsets", "size")

    def __init__(self, values: Sequence[str]) -> None:
        n = len(values)
        self.size = n
        joined = "".join(values)  # TypeError for non-str items, as desired
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        flat: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
        if joined.isascii():
            flat = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
        else:
            data = joined.encode("utf-16-le", "surrogatepass")
            flat = np.frombuffer(data, dtype="<u2").astype(np.uint16, copy=False)
            if flat.size != len(joined):
                # Astral characters are 2 code units (a surrogate pair) in
                # UTF-16: recount per id. Lone surrogates stay 1 unit.
                lengths = np.fromiter(
                    (len(v.encode("utf-16-le", "surrogatepass")) // 2 for v in values),
                    dtype=np.int64,
                    count=n,
                )
        self.max_len = int(lengths.max()) if n else 0
        self.min_len = int(lengths.min()) if n else 0
        self.flat = np.concatenate([flat, np.zeros(self.max_len, dtype=flat.dtype)])
        offsets = np.zeros(n, dtype=np.int64)
        if n > 1:
            np.cumsum(lengths[:-1], out=offsets[1:])
        self.offsets = offsets
        self.lengths = lengths

    def fnv_update(self, state: npt.NDArray[np.uint32]) -> None:
        """In place: ``state[i] = fnv1a32 continued over id i`` (masked by length)."""
        if self.size == 0 or self.max_len == 0:
            return
        if self.min_len == self.max_len:
            # Uniform length (e.g. UUIDs): one transpose, then contiguous rows.
            cols = self.flat[: self.size * self.max_len].reshape(self.size, self.max_len)
            cols = np.ascontiguousarray(cols.T)
            for j in range(self.max_len):
                state ^= cols[j]
                state *= _U32_PRIME
            return
        idx = self.offsets.copy()
        units = np.empty(self.size, dtype=self.flat.dtype)
        scratch = np.empty_like(state)
        for j in range(self.max_len):
            np.take(self.flat, idx, out=units)
            if j < self.min_len:
                state ^= units
                state *= _U32_PRIME
            else:
                np.bitwise_xor(state, units, out=scratch)
                scratch *= _U32_PRIME
                np.copyto(state, scratch, where=self.lengths > j)
            idx += 1


def _fnv_update_constant(state: npt.NDArray[np.uint32], s: str) -> None:
    """In place: continue every state over the same string ``s``."""
    for unit in _utf16_units(s):
        state ^= np.uint32(unit)
        state *= _U32_PRIME


# Decimal digit k (10**k place) of a uint32 exists iff h >= 10**k (k >= 1).
_POW10: Final = tuple(np.uint32(10**k) for k in range(10))


def _fnv_of_decimal(h: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    """Vectorized ``fnv1a32(str(h))`` for uint32 ``h`` (1 to 10 decimal digits)."""
    out = np.full(h.shape, FNV32_OFFSET_BASIS, dtype=np.uint32)
    scratch = np.empty_like(out)
    digit = np.empty_like(out)
    ten = np.uint32(10)
    zero_char = np.uint32(0x30)  # "0"
    for k in range(9, -1, -1):
        p = _POW10[k]
        np.floor_divide(h, p, out=digit)
        digit %= ten
        digit += zero_char
        if k == 0:  # the units digit always exists
            out ^= digit
            out *= _U32_PRIME
        else:  # skip leading zeros: digit k exists iff h >= 10**k
            np.bitwise_xor(out, digit, out=scratch)
            scratch *= _U32_PRIME
            np.copyto(out, scratch, where=h >= p)
    return out


def _as_sequence(values: Iterable[str]) -> Sequence[str]:
    if isinstance(values, (list, tuple)):
        return values
    if isinstance(values, np.ndarray):
        return values.tolist()  # type: ignore[no-any-return]
    return list(values)


def _bucket_indices(seed: str, ids: _EncodedIds, version: int) -> npt.NDArray[np.uint32]:
    """Integer buckets ``k`` with ``hash(seed, id, version) == k / modulus``."""
    if version == 2:
        state = np.full(ids.size, _seed_state(seed), dtype=np.uint32)
        ids.fnv_update(state)  # fnv1a32(seed + value), seed state precomputed
        outer = _fnv_of_decimal(state)  # fnv1a32(str(...))
        outer %= np.uint32(10000)
        return outer
    if version == 1:
        state = np.full(ids.size, FNV32_OFFSET_BASIS, dtype=np.uint32)
        ids.fnv_update(state)  # fnv1a32(value + seed)
        _fnv_update_constant(state, seed)
        state %= np.uint32(1000)
        return state
    raise ValueError(f"unknown hash version {version!r} (GrowthBook knows 1 and 2)")


def _hash_encoded(seed: str, ids: _EncodedIds, version: int) -> npt.NDArray[np.float64]:
    # k / modulus in float64: the same correctly rounded division as the
    # scalar ``(h % 10000) / 10000``, hence bit-identical.
    k = _bucket_indices(seed, ids, version)
    return k.astype(np.float64) / _HASH_MODULUS[version]


def hash_bulk(seed: str, values: Iterable[str], version: int = 2) -> npt.NDArray[np.float64]:
    """Vectorized :func:`hash`: ``out[i] == hash(seed, values[i], version)``.

    Bit-identical to the scalar path for every string (ASCII, BMP, astral,
    lone surrogates, empty). Raises ``ValueError`` for unknown versions
    (the scalar returns ``None``).
    """
    return _hash_encoded(seed, _EncodedIds(_as_sequence(values)), version)


def choose_variation_bulk(
    n: npt.NDArray[np.float64], ranges: Sequence[BucketRange]
) -> npt.NDArray[np.int8] | npt.NDArray[np.int16]:
    """Vectorized :func:`choose_variation` (``-1`` = no range)."""
    dtype = np.int8 if len(ranges) <= np.iinfo(np.int8).max else np.int16
    out = np.full(n.shape, NO_VARIANT, dtype=dtype)
    # Reverse order so the *first* matching range wins, as in the spec.
    for i in range(len(ranges) - 1, -1, -1):
        start, end = ranges[i]
        if start < end:
            out[(n >= start) & (n < end)] = i
    return out


def assign_bulk(
    *,
    seed: str,
    hash_values: Iterable[str],
    weights: Sequence[float],
    coverage: float = 1.0,
    hash_version: int = 2,
) -> npt.NDArray[np.int8] | npt.NDArray[np.int16]:
    """Vectorized :func:`assign`: variant index per id, ``-1`` for none.

    ``int8`` (``int16`` beyond 127 variations). Empty ids get ``-1``, like
    the scalar path's ``None``. With hash v2 the variant is a gather from
    the cached 10000-entry bucket table (see :func:`_v2_bucket_table`).
    """
    key = tuple(weights)
    ranges = _cached_ranges(key, coverage)  # raises for < 2 variations
    ids = _EncodedIds(_as_sequence(hash_values))
    out: npt.NDArray[np.int8] | npt.NDArray[np.int16]
    if hash_version == 2 and len(key) <= np.iinfo(np.int8).max:
        # 0xFF ("none") reads as -1 through an int8 view.
        table = np.frombuffer(_v2_bucket_table(key, coverage), dtype=np.int8)
        out = table[_bucket_indices(seed, ids, 2)]
    else:
        out = choose_variation_bulk(_hash_encoded(seed, ids, hash_version), ranges)
    out[ids.lengths == 0] = NO_VARIANT
    return out


def in_namespace_bulk(
    hash_values: Iterable[str], *, namespace_id: str, start: float, end: float
) -> npt.NDArray[np.bool_]:
    """Vectorized :func:`in_namespace`."""
    n = hash_bulk("__" + namespace_id, hash_values, 1)
    return (n >= start) & (n < end)


def in_holdout_bulk(hash_values: Iterable[str], *, percent: float, seed: str = HOLDOUT_SEED) -> npt.NDArray[np.bool_]:
    """Vectorized :func:`in_holdout` (empty ids are never in the holdout)."""
    _check_percent(percent)
    ids = _EncodedIds(_as_sequence(hash_values))
    n = _hash_encoded(seed, ids, 2)
    return (n < percent / 100) & (ids.lengths > 0)
