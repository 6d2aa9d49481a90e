"""The download code against a real HTTP server on 127.0.0.1, serving a file the test makes."""

import http.server
import threading

import pytest
from click.testing import CliRunner

from annbench.cli import main
from annbench.data import download
from annbench.data.download import StandardDataset, fetch_standard
from annbench.data.download import download as download_url
from annbench.data.format import read_dataset
from annbench.errors import AnnbenchError
from annbench.metrics import Metric


class Server:
    """Serves one payload; can break transfers after some bytes and ignore Range requests."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.break_after: int | None = None  # bytes sent before the connection is cut
        self.breaks_left = 0
        self.honour_range = True
        self.ranges: list[str | None] = []
        self.status_override: int | None = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.ranges.append(self.headers.get("Range"))
                if server.status_override:
                    self.send_error(server.status_override)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and server.honour_range:
                    start = int(header.split("=")[1].split("-")[0])
                    if start >= len(server.payload):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header(
                        "Content-Range",
                        f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}",
                    )
                else:
                    self.send_response(200)
                body = server.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.breaks_left > 0 and server.break_after is not None:
                    server.breaks_left -= 1
                    self.wfile.write(body[: server.break_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tiny_spec(monkeypatch, tiny):
    spec = StandardDataset(
        "tiny",
        len(tiny.train),
        len(tiny.test),
        tiny.train.shape[1],
        Metric.EUCLIDEAN,
        1,
        "test file",
    )
    monkeypatch.setitem(download.STANDARD, "tiny", spec)
    return spec


def test_clean_download_is_verified_and_named_only_when_complete(tiny_path, tiny_spec, tmp_path):
    with Server(tiny_path.read_bytes()) as server:
        seen = []
        path = fetch_standard(
            "tiny", tmp_path, server.url, progress=lambda r, t: seen.append((r, t))
        )
    assert path.read_bytes() == tiny_path.read_bytes()
    assert seen[-1] == (len(tiny_path.read_bytes()),) * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.hdf5"]
    assert read_dataset(path).content_hash == read_dataset(tiny_path).content_hash


def test_broken_transfer_resumes_with_a_range_request(tiny_path, tiny_spec, tmp_path):
    with Server(tiny_path.read_bytes()) as server:
        server.break_after, server.breaks_left = 30_000, 2
        path = fetch_standard("tiny", tmp_path, server.url)
    assert path.read_bytes() == tiny_path.read_bytes()
    assert server.ranges == [None, "bytes=30000-", "bytes=60000-"]


def test_give_up_keeps_part_then_next_run_resumes(tiny_path, tiny_spec, tmp_path):
    payload = tiny_path.read_bytes()
    with Server(payload) as server:
        server.break_after, server.breaks_left = 50_000, 99
        with pytest.raises(AnnbenchError, match="did not complete after 2 attempts.*resume"):
            fetch_standard("tiny", tmp_path, server.url, attempts=2)
    assert not (tmp_path / "tiny.hdf5").exists()
    assert (tmp_path / "tiny.hdf5.part").stat().st_size == 100_000
    with Server(payload) as server:
        fetch_standard("tiny", tmp_path, server.url)
    assert server.ranges == ["bytes=100000-"]
    assert (tmp_path / "tiny.hdf5").read_bytes() == payload


def test_server_ignoring_range_restarts_cleanly(tiny_path, tiny_spec, tmp_path):
    payload = tiny_path.read_bytes()
    (tmp_path / "tiny.hdf5.part").write_bytes(payload[:1234])
    with Server(payload) as server:
        server.honour_range = False
        fetch_standard("tiny", tmp_path, server.url)
    assert (tmp_path / "tiny.hdf5").read_bytes() == payload


def test_wrong_file_fails_verification_and_leaves_nothing(
    tiny_path, tiny_spec, tmp_path, monkeypatch
):
    monkeypatch.setitem(
        download.STANDARD, "tiny", StandardDataset("tiny", 5, 5, 5, Metric.EUCLIDEAN, 1, "")
    )
    with Server(tiny_path.read_bytes()) as server:
        with pytest.raises(AnnbenchError, match="failed verification.*expected"):
            fetch_standard("tiny", tmp_path, server.url)
    assert list(tmp_path.iterdir()) == []


def test_truncated_hdf5_fails_verification(tmp_path, tiny_spec):
    with Server(b"\x89HDF\r\n\x1a\n" + b"\0" * 100) as server:
        with pytest.raises(AnnbenchError, match="not a readable HDF5"):
            fetch_standard("tiny", tmp_path, server.url)
    assert list(tmp_path.iterdir()) == []


def test_http_errors_and_unknown_names(tmp_path, tiny_spec):
    with Server(b"") as server:
        server.status_override = 404
        with pytest.raises(AnnbenchError, match="HTTP 404"):
            download_url(server.url + "/x.hdf5", tmp_path / "x.hdf5")
    with pytest.raises(
        AnnbenchError, match="Unknown standard dataset 'nope'. Available: .*sift-128"
    ):
        fetch_standard("nope", tmp_path)
    with pytest.raises(AnnbenchError, match="did not complete"):
        download_url("http://127.0.0.1:9/x.hdf5", tmp_path / "x.hdf5", attempts=1)


@pytest.mark.slow
def test_cli_fetch_then_run(tiny_path, tiny_spec, isolated_folders):
    runner = CliRunner()
    with Server(tiny_path.read_bytes()) as server:
        result = runner.invoke(main, ["datasets", "fetch", "tiny", "--url", server.url])
    assert result.exit_code == 0, result.output
    assert (isolated_folders / "data" / "tiny.hdf5").is_file()
    listing = runner.invoke(main, ["datasets", "list"])
    assert "sift-128-euclidean: 1,000,000 x 128" in listing.output
    ran = runner.invoke(main, ["run", "-b", "faiss-flat", "-d", "tiny", "--runs", "1"])
    assert ran.exit_code == 0 and "Stored 1 results" in ran.output


def test_standard_registry_names_the_issue_datasets():
    for name in (
        "sift-128-euclidean",
        "glove-25-angular",
        "glove-100-angular",
        "fashion-mnist-784-euclidean",
        "mnist-784-euclidean",
        "nytimes-256-angular",
        "gist-960-euclidean",
        "deep-image-96-angular",
        "lastfm-64-dot",
    ):
        assert name in download.STANDARD


def test_not_downloaded_standard_dataset_says_fetch(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["run", "-b", "faiss-flat", "-d", "glove-25-angular"])
    assert result.exit_code != 0
    assert "run 'annbench datasets fetch glove-25-angular'" in result.output
