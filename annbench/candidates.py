"""Index structures that fit a memory budget, proposed from the dataset's size and dimension.

Like autofaiss, candidates are faiss ``index_factory`` strings (run by the ``faiss-factory``
backend) plus other installed libraries' graphs; unlike autofaiss nothing here is trusted as a
result: each candidate is built and its recall measured on held-out queries. Memory estimates
are of the loaded index (codes, ids, graph links, centroids, codebooks, rotations); a
candidate is proposed only when its estimate is within the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from annbench.backends.faiss_factory import HEADER_BYTES, code_bytes, read_factory
from annbench.sweep.runner import geometric_ladder

#: The backends ``propose`` draws candidates from.
CANDIDATE_BACKENDS = ("faiss-factory", "hnswlib", "usearch")
#: HNSW graphs try these M (links per node), the largest that fits first.
HNSW_M = (64, 48, 32, 24, 16, 12, 8)
#: Search beam widths bisected for graphs, nprobe ladder caps for inverted files.
EF_RANGE = (10, 512)
NPROBE_MAX = 256
#: Candidates whose search settings are re-ranked with exact or SQ8 vectors keep this many
#: times k before re-ranking.
K_FACTOR = 8
EF_CONSTRUCTION = 128


@dataclass(frozen=True)
class Candidate:
    """One index structure to build and the search parameter whose ladder to bisect."""

    backend: str
    build_params: dict[str, Any]
    estimated_bytes: int  # of the index loaded in memory
    code_bytes: int  # per vector: what the base vectors cost as stored (codes, links, ids)
    search_param: str | None = None  # the monotone parameter bisected (None: nothing to tune)
    ladder: tuple[int, ...] = ()
    fixed_search: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def label(self) -> str:
        """Short description: the factory string, or backend and build parameters."""
        factory = self.build_params.get("factory")
        if factory:
            return f"{self.backend} {factory}"
        params = " ".join(f"{k}={v}" for k, v in self.build_params.items())
        return f"{self.backend} {params}".strip()

    def search_configs(self) -> tuple[dict[str, Any], ...]:
        """The ladder as search settings (one setting when nothing is tuned)."""
        if self.search_param is None:
            return (dict(self.fixed_search),)
        return tuple({**self.fixed_search, self.search_param: v} for v in self.ladder)


def nlist_for(n: int) -> int:
    """Inverted-file cells: the power of two nearest 4 sqrt(n), with at least 39 training
    vectors per cell (faiss' own minimum) and at least 1."""
    target = 4 * math.sqrt(n)
    nlist = 2 ** round(math.log2(max(target, 1)))
    while nlist > 1 and n < 39 * nlist:
        nlist //= 2
    return max(1, nlist)


def pq_sizes(d: int) -> list[int]:
    """PQ sub-quantizer counts m that divide d with at least two dimensions each (each one
    byte per vector at 8 bits; one dimension each is what SQ8 does better), largest first."""
    return sorted((m for m in range(4, d // 2 + 1) if d % m == 0), reverse=True)


def estimate_bytes(n: int, d: int, factory: str) -> int:
    """Estimated memory of faiss ``factory`` over ``n`` vectors of ``d`` dims, loaded."""
    found = read_factory(factory, d)
    assert found is not None and found.sized, factory  # candidates use strings it reads
    return found.memory_bytes(n)


def vector_code_bytes(d: int, part: str) -> int:
    """Bytes per vector of a faiss storage component (``Flat``, ``SQ8``, ``PQ32x8``...)."""
    return code_bytes(part, d)


def faiss_candidates(n: int, d: int, budget: float | None) -> list[Candidate]:
    """faiss factory strings that fit ``budget`` bytes (all, when None), most promising
    first: HNSW graphs over exact or scalar-quantised vectors (M sized to the budget),
    inverted files with exact, scalar-quantised and product-quantised codes (the largest PQ
    code that fits, with re-ranking, OPQ and 4-bit fast-scan variants), then exact search.
    8-bit PQ skips polysemous training (``np``): it only serves Hamming filtering, which
    annbench does not use, and takes a minute where k-means takes a second."""
    nlist = nlist_for(n)
    nprobe = tuple(geometric_ladder(1, min(nlist, NPROBE_MAX), 1.5))
    ef = tuple(geometric_ladder(EF_RANGE[0], EF_RANGE[1], 1.5))
    out: list[Candidate] = []
    ranked: list[tuple[int, int]] = []

    def fits(factory: str) -> bool:
        return budget is None or estimate_bytes(n, d, factory) <= budget

    def add(
        rank: int, factory: str, param: str | None, ladder: tuple[int, ...], **fixed: Any
    ) -> None:
        ranked.append(
            (rank, len(ranked)),
        )
        out.append(
            Candidate(
                "faiss-factory",
                {"factory": factory},
                estimate_bytes(n, d, factory),
                _code_bytes(n, d, factory),
                param,
                ladder if param else (),
                fixed,
            )
        )

    # ranks: most promising first, and among compressed codes the quick to train first, so a
    # time budget that runs out leaves the slow trainings (8-bit PQ, OPQ) unmeasured
    for storage, rank in (("Flat", 0), ("SQ8", 3)):
        sizes = [m for m in HNSW_M if fits(f"HNSW{m},{storage}")]
        if sizes:
            # the largest M that fits (up to 32), and 16, cheaper per query, when it fits too
            largest = min(sizes[0], 32)
            add(rank, f"HNSW{largest},{storage}", "efSearch", ef)
            if largest != 16 and 16 in sizes:
                add(4 if storage == "Flat" else 5, f"HNSW16,{storage}", "efSearch", ef)
    for storage, rank in (("Flat", 1), ("SQ8", 2), ("SQ4", 6)):
        if fits(f"IVF{nlist},{storage}"):
            add(rank, f"IVF{nlist},{storage}", "nprobe", nprobe)
    # 8-bit codebooks (and OPQ) train on at least 256 vectors: none on a smaller base
    pq = [m for m in pq_sizes(d) if n >= 256 and fits(f"IVF{nlist},PQ{m}x8np")]
    if pq:
        best = pq[0]
        for refine in ("RFlat", "Refine(SQ8)"):
            fitting = [m for m in pq if m <= 64 and fits(f"IVF{nlist},PQ{m}x8np,{refine}")]
            if fitting:
                factory = f"IVF{nlist},PQ{fitting[0]}x8np,{refine}"
                add(9, factory, "nprobe", nprobe, k_factor=K_FACTOR)
                break
        add(8, f"IVF{nlist},PQ{best}x8np", "nprobe", nprobe)
        opq = [m for m in pq if m <= 64 and fits(f"OPQ{m},IVF{nlist},PQ{m}x8np")]
        if opq:
            add(10, f"OPQ{opq[0]},IVF{nlist},PQ{opq[0]}x8np", "nprobe", nprobe)
        fast = [m for m in pq if m % 2 == 0 and fits(f"IVF{nlist},PQ{m}x4fs")]
        if fast:
            add(7, f"IVF{nlist},PQ{fast[0]}x4fs", "nprobe", nprobe)
    if fits("Flat"):
        add(11, "Flat", None, ())
    order = sorted(range(len(out)), key=lambda i: ranked[i])
    return [out[i] for i in order]


def _code_bytes(n: int, d: int, factory: str) -> int:
    """Bytes per base vector of ``factory`` (everything that grows with n, divided by n)."""
    fixed = estimate_bytes(0, d, factory)
    return math.ceil((estimate_bytes(n, d, factory) - fixed) / max(n, 1))


def hnswlib_bytes(n: int, d: int, m: int) -> int:
    """Estimated memory of an hnswlib graph: vectors, 2M level-0 links, labels, upper levels."""
    per_element = 4 * d + 4 + 2 * m * 4 + 8
    return int(n * (per_element + 4 * m / max(m - 1, 1) + 16))


def other_candidates(n: int, d: int, budget: float | None, installed: set[str]) -> list[Candidate]:
    """Graphs of other installed libraries, with M sized to ``budget``."""
    out = []
    if "hnswlib" in installed:
        sizes = [m for m in HNSW_M if budget is None or hnswlib_bytes(n, d, m) <= budget]
        if sizes:
            m = min(sizes[0], 32)
            per_vector = math.ceil(hnswlib_bytes(n, d, m) / max(n, 1))
            out.append(
                Candidate(
                    "hnswlib",
                    {"M": m, "ef_construction": EF_CONSTRUCTION},
                    hnswlib_bytes(n, d, m),
                    per_vector,
                    "ef",
                    tuple(geometric_ladder(EF_RANGE[0], EF_RANGE[1], 1.5)),
                )
            )
    return out


def usearch_bytes(n: int, d: int, m: int, dtype: str) -> int:
    """Estimated memory of a usearch graph: compressed vectors, 2M level-0 links and upper
    levels (4-byte ids), a key and a level per node."""
    per_scalar = {"i8": 1, "f16": 2, "f32": 4}[dtype]
    return int(n * (d * per_scalar + (2 * m + 2) * 4 + 16) + HEADER_BYTES)


def _usearch_candidate(n: int, d: int, budget: float | None, metric: str) -> Candidate | None:
    """usearch with compressed storage (i8 under cosine, else f16), M sized to ``budget``."""
    dtype = "i8" if metric == "angular" else "f16"
    sizes = [m for m in HNSW_M if budget is None or usearch_bytes(n, d, m, dtype) <= budget]
    if not sizes:
        return None
    m = min(sizes[0], 32)
    return Candidate(
        "usearch",
        {"connectivity": m, "expansion_add": EF_CONSTRUCTION, "dtype": dtype},
        usearch_bytes(n, d, m, dtype),
        math.ceil((usearch_bytes(n, d, m, dtype) - HEADER_BYTES) / max(n, 1)),
        "expansion_search",
        tuple(geometric_ladder(EF_RANGE[0], EF_RANGE[1], 1.5)),
    )


def propose(
    n: int,
    d: int,
    budget: float | None = None,
    installed: set[str] | frozenset[str] = frozenset(),
    metric: str = "euclidean",
) -> list[Candidate]:
    """Every candidate that fits ``budget`` bytes, most promising first: faiss factory
    strings when the ``faiss-factory`` backend is installed, then other libraries' graphs
    (hnswlib; usearch with compressed vectors)."""
    out = faiss_candidates(n, d, budget) if "faiss-factory" in installed else []
    out += other_candidates(n, d, budget, set(installed))
    if "usearch" in installed:
        candidate = _usearch_candidate(n, d, budget, metric)
        out += [candidate] if candidate is not None else []
    return out
