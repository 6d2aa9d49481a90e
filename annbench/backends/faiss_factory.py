"""Read a faiss ``index_factory`` string without faiss: the values that cannot work, what each
part trains on, the search parameters it has and its memory, so a sweep rejects a bad string
in milliseconds instead of after minutes of training or a crash in a worker.

``read_factory`` knows the common components (pre-transforms ``PCA``/``OPQ``/``RR``/``L2norm``,
``IVF``/``IMI``, ``HNSW``, ``NSG``, ``Flat``, ``PQ``, ``SQ``, ``LSH``, ``RFlat``/``Refine(...)``)
and returns None for anything else: the caller then asks faiss itself (see
``faiss_backend.probe_factory``). No faiss import here, so ``candidates`` can use it too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from annbench.errors import AnnbenchError

#: Headers, parameters and allocator slack of a loaded index, beyond its arrays.
HEADER_BYTES = 4096
#: Bytes an empty inverted list costs in memory (two std::vector headers).
LIST_BYTES = 48
#: faiss warns below this many training vectors per k-means centroid.
POINTS_PER_CENTROID = 39
#: HNSW with M < 2 crashes faiss (SIGABRT at M=0, SIGSEGV at M=1; faiss 1.15).
MIN_HNSW_M = 2
#: NSG with R < 10 hangs faiss' build (seen with faiss 1.15 on 2,000 vectors).
MIN_NSG_R = 10
#: Scalar quantizers and their bits per dimension.
SQ_BITS = {"SQ4": 4, "SQ6": 6, "SQ8": 8, "SQ8_direct": 8, "SQ8_direct_signed": 8}
SQ_BITS |= {"SQfp16": 16, "SQbf16": 16}


@dataclass
class Factory:
    """What a factory string makes over ``d``-dimensional vectors."""

    training: list[tuple[str, int]] = field(default_factory=list)  # (part, least vectors)
    nlist: int = 0  # k-means inverted lists (0: none, or an IMI's product of lists)
    search_params: set[str] = field(default_factory=set)  # of FaissFactory.SEARCH_PARAMS
    fixed_bytes: int = HEADER_BYTES  # centroids, codebooks, rotations, empty lists
    vector_bytes: float = 0.0  # per base vector: codes, ids, graph links
    sized: bool = True  # whether the two above are known

    def memory_bytes(self, n: int) -> int | None:
        """Estimated memory of the index over ``n`` vectors, loaded (None: unknown)."""
        return int(self.fixed_bytes + math.ceil(n * self.vector_bytes)) if self.sized else None


def read_factory(factory: str, d: int) -> Factory | None:
    """``factory`` over ``d`` dims as the IDMap-wrapped index FaissFactory builds, or None
    when a component is not one this reader knows; AnnbenchError for values that cannot work."""
    try:
        return _read(split_parts(factory), d)
    except AnnbenchError as exc:
        raise AnnbenchError(f"faiss cannot make index '{factory}' for d={d}: {exc}") from None


def _read(parts: list[str], d: int) -> Factory | None:
    if not parts or d < 1:
        return None
    out = Factory()
    ids = 8  # FaissFactory wraps indexes without ids in an IDMap; IVF keeps its own
    if parts[0] in ("IDMap", "IDMap2"):
        ids = 16 if parts[0] == "IDMap2" else 8
        parts = parts[1:]
    if parts and (parts[-1] == "RFlat" or re.fullmatch(r"Refine\(.+\)", parts[-1])):
        refine = "Flat" if parts[-1] == "RFlat" else parts[-1][len("Refine(") : -1]
        if not _codes(out, refine, d):
            return None
        out.search_params.add("k_factor")
        out.vector_bytes += ids  # a refine index keeps no ids: FaissFactory wraps it
        parts = parts[:-1]
    dt = d
    while parts and (after := _transform(out, parts[0], dt)) is not None:
        dt, parts = after, parts[1:]
    if not parts:
        return None
    first, rest = parts[0], parts[1:]
    if found := re.fullmatch(r"IVF(\d+)(?:_HNSW(\d+)|_NSG(\d+))?", first):
        if len(rest) != 1:
            return None
        nlist = _at_least("IVF nlist", int(found[1]), 1)
        out.training.append((f"IVF{nlist}", nlist))
        out.nlist = nlist
        out.search_params.add("nprobe")
        out.fixed_bytes += nlist * (dt * 4 + LIST_BYTES)
        if found[2]:
            m = _at_least("HNSW M", int(found[2]), MIN_HNSW_M)
            out.search_params.add("efSearch")
            out.fixed_bytes += nlist * _hnsw_link_bytes(m)
        if found[3]:
            out.fixed_bytes += nlist * _at_least("NSG R", int(found[3]), MIN_NSG_R) * 4
        out.vector_bytes += 8  # the id of each vector in its list
        return out if _codes(out, rest[0], dt, lists=nlist) else None
    if found := re.fullmatch(r"IMI2x(\d+)", first):
        bits = _at_least("IMI bits", int(found[1]), 1)
        if bits > 24 or dt % 2:
            raise AnnbenchError(
                f"IMI2x{bits} needs an even dimension (got {dt}) "
                "and at most 24 bits; use IMI2x8 to IMI2x14 on an even dimension"
            )
        if len(rest) != 1:
            return None
        out.training.append((f"IMI2x{bits}", 2**bits))
        out.search_params.add("nprobe")
        out.fixed_bytes += 2**bits * dt * 4 + 4**bits * LIST_BYTES
        out.vector_bytes += 8
        return out if _codes(out, rest[0], dt) else None
    graph = re.fullmatch(r"(HNSW|NSG)(\d+)(?:_(.+))?", first)
    if graph:
        storage = graph[3] or (rest[0] if len(rest) == 1 else "Flat")
        if graph[3] and rest or len(rest) > 1:
            return None
        if graph[1] == "HNSW":
            m = _at_least("HNSW M", int(graph[2]), MIN_HNSW_M)
            out.search_params.add("efSearch")
            out.vector_bytes += _hnsw_link_bytes(m)
        else:
            out.vector_bytes += _at_least("NSG R", int(graph[2]), MIN_NSG_R) * 4
        out.vector_bytes += ids
        return out if _codes(out, storage, dt) else None
    if rest:
        return None
    out.vector_bytes += ids
    return out if _codes(out, first, dt) else None


def split_parts(factory: str) -> list[str]:
    """The comma-separated components of ``factory``, commas inside parentheses kept."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(factory):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(factory[start:i].strip())
            start = i + 1
    parts.append(factory[start:].strip())
    return parts


def code_bytes(part: str, d: int) -> int:
    """Bytes per vector of vector storage ``part`` (``Flat``, ``SQ8``, ``PQ32x8``...)."""
    out = Factory()
    if not _codes(out, part, d):
        raise ValueError(f"no code size known for faiss component '{part}'")
    return int(out.vector_bytes)


def _transform(out: Factory, part: str, d: int) -> int | None:
    """The dimension after pre-transform ``part`` (its costs added to ``out``), or None when
    ``part`` is not a pre-transform this reader knows."""
    if part == "L2norm":
        return d
    if found := re.fullmatch(r"(PCAW?R?|RR|Pad)(\d+)", part):
        kind, d_out = found[1], int(found[2])
        if d_out < 1 or (kind.startswith("PCA") and d_out > d) or (kind == "Pad" and d_out < d):
            bound = f"at most {d}" if kind != "Pad" else f"at least {d}"
            raise AnnbenchError(
                f"{part} cannot output {d_out} dimensions from {d}; use {kind}N with N {bound}"
            )
        if kind.startswith("PCA"):  # the full eigenvector matrix, the projection, mean
            out.fixed_bytes += (d * d + d_out * d + 2 * d) * 4
        elif kind == "RR":
            out.fixed_bytes += d_out * d * 4
        return d_out
    if found := re.fullmatch(r"OPQ(\d+)(?:_(\d+))?", part):
        m = int(found[1])
        d_out = int(found[2]) if found[2] else d
        if m < 1 or d_out < 1 or d_out % m:
            raise AnnbenchError(
                f"{part} needs its output dimension {d_out} to be a multiple of its {m} "
                f"sub-quantizers; use {_near('OPQ', d_out, m)}"
            )
        out.training.append((f"OPQ{m}", 256))
        out.fixed_bytes += d_out * d * 4
        return d_out
    return None


def _codes(out: Factory, part: str, d: int, lists: int = 0) -> bool:
    """Add the costs of vector storage ``part`` over ``d`` dims to ``out``; False when ``part``
    is not a storage this reader knows."""
    if part == "Flat":
        out.vector_bytes += 4 * d
        return True
    if part in SQ_BITS:
        out.vector_bytes += math.ceil(d * SQ_BITS[part] / 8)
        out.fixed_bytes += 2 * d * 4
        return True
    if part == "LSH":
        out.vector_bytes += math.ceil(d / 8)
        return True
    found = re.fullmatch(r"PQ(\d+)(?:x(\d+))?(np|fs|fsr)?", part)
    if not found:
        return False
    m, nbits = int(found[1]), int(found[2] or 8)
    fast = (found[3] or "").startswith("fs")
    if m < 1 or d % m:
        raise AnnbenchError(
            f"{part} needs the dimension d={d} to be a multiple of the number of "
            f"sub-quantizers {m}; use {_near('PQ', d, m)}"
        )
    if not 1 <= nbits <= 24 or (fast and nbits != 4):
        raise AnnbenchError(
            f"{part} has {nbits} bits per sub-quantizer; use 1 to 24 (8 is usual, 4 with fs)"
        )
    code = math.ceil(m * nbits / 8)
    out.training.append((f"PQ{m}x{nbits}", 2**nbits))
    out.vector_bytes += code
    out.fixed_bytes += 2**nbits * d * 4
    if fast:  # codes are stored in blocks of 32 vectors, each list padding its last block
        out.fixed_bytes += max(lists, 1) * 32 * code
    return True


def _hnsw_link_bytes(m: int) -> int:
    """Per node: 2M level-0 links, upper levels, level and offsets."""
    return (2 * m + 2) * 4 + 12


def _at_least(what: str, value: int, least: int) -> int:
    if value < least:
        raise AnnbenchError(
            f"{what}={value} cannot work (faiss crashes, hangs or finds nothing); "
            f"use {what} >= {least}"
        )
    return value


def _near(prefix: str, d: int, m: int) -> str:
    """Up to three divisors of ``d`` nearest ``m``, as ``PQ4, PQ8 or PQ16``."""
    divisors = [x for x in range(1, d + 1) if d % x == 0]
    nearest = [f"{prefix}{x}" for x in sorted(sorted(divisors, key=lambda x: (abs(x - m), x))[:3])]
    return nearest[0] if len(nearest) == 1 else f"{', '.join(nearest[:-1])} or {nearest[-1]}"
