"""Downloading a data set: checksums, mirrors, truncated and corrupt files, offline, against an HTTP
server on 127.0.0.1 serving IDX files generated here."""

import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

import fastnet as fn
from fastnet.data import datasets

FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz"]


def idx_gz(tmp_path, array, name):
    fn.datasets.save_idx(tmp_path / name, array)
    return (tmp_path / name).read_bytes()


@pytest.fixture(scope="module")
def payloads(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    rng = np.random.default_rng(0)
    return {
        FILES[0]: idx_gz(folder, rng.integers(0, 256, (20, 6, 6)).astype(np.uint8), FILES[0]),
        FILES[1]: idx_gz(folder, rng.integers(0, 10, 20).astype(np.uint8), FILES[1]),
        FILES[2]: idx_gz(folder, rng.integers(0, 256, (8, 6, 6)).astype(np.uint8), FILES[2]),
        FILES[3]: idx_gz(folder, rng.integers(0, 10, 8).astype(np.uint8), FILES[3]),
    }


class Server:
    """Serves `routes` (path -> bytes); a path listed in `truncate` claims its full length but
    sends half and closes; every request is recorded."""

    def __init__(self):
        self.routes, self.truncate, self.requests = {}, set(), []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append(self.path)
                body = owner.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if self.path in owner.truncate else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    s = Server()
    s.home = tmp_path / "home"
    yield s
    s.close()


def publish(monkeypatch, server, payloads, mirrors=("/a/",), checksums=None):
    sums = checksums or {name: hashlib.sha256(data).hexdigest() for name, data in payloads.items()}
    # mnist: not installed on the test machines (fashion-mnist is, and load() would find that copy)
    monkeypatch.setitem(datasets.SOURCES, "mnist", ([server.url + m for m in mirrors], sums))
    monkeypatch.setenv("HOME", str(server.home))
    monkeypatch.delenv("FASTNET_DATA", raising=False)


def test_download_fetches_verifies_and_loads(tmp_path, monkeypatch, server, payloads):
    for name, data in payloads.items():
        server.routes["/a/" + name] = data
    publish(monkeypatch, server, payloads)
    (x_train, y_train), (x_test, y_test) = fn.datasets.load("mnist", root=tmp_path, download=True)
    assert x_train.shape == (20, 1, 6, 6) and x_test.shape == (8, 1, 6, 6)
    assert sorted(os.listdir(tmp_path / "mnist")) == sorted(FILES)
    served = len(server.requests)
    fn.datasets.load("mnist", root=tmp_path, download=True)     # found: nothing fetched
    assert len(server.requests) == served == 4


def test_a_dead_or_truncated_mirror_falls_through_to_the_next(tmp_path, monkeypatch, server, payloads):
    for name, data in payloads.items():
        server.routes["/b/" + name] = data
        server.routes["/a/" + name] = data
        server.truncate.add("/a/" + name)
    publish(monkeypatch, server, payloads, mirrors=("/missing/", "/a/", "/b/"))
    folder = fn.datasets.fetch("mnist", root=tmp_path)
    assert sorted(os.listdir(folder)) == sorted(FILES)
    assert server.requests[:3] == ["/missing/" + FILES[0], "/a/" + FILES[0], "/b/" + FILES[0]]


def test_corrupt_or_truncated_downloads_leave_nothing_behind(tmp_path, monkeypatch, server, payloads):
    corrupt = bytearray(payloads[FILES[0]])
    corrupt[40] ^= 0xFF
    server.routes["/a/" + FILES[0]] = bytes(corrupt)
    publish(monkeypatch, server, payloads)
    with pytest.raises(fn.DataError, match="SHA-256 mismatch"):
        fn.datasets.fetch("mnist", root=tmp_path)
    assert os.listdir(tmp_path / "mnist") == []

    server.routes["/a/" + FILES[0]] = payloads[FILES[0]]
    server.truncate.add("/a/" + FILES[0])
    with pytest.raises(fn.DataError, match="could not download"):
        fn.datasets.fetch("mnist", root=tmp_path)
    assert os.listdir(tmp_path / "mnist") == []


def test_offline_is_a_clear_error(tmp_path, monkeypatch, payloads):
    monkeypatch.setitem(datasets.SOURCES, "mnist", (["http://127.0.0.1:9/"], {FILES[0]: "0" * 64}))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("FASTNET_DATA", raising=False)
    with pytest.raises(fn.DataError, match="(?s)could not download.*by hand"):
        fn.datasets.load("mnist", root=tmp_path / "nowhere", download=True)


def test_kmnist_has_no_verified_source():
    with pytest.raises(fn.DataError, match="no verified download source for 'kmnist'"):
        fn.datasets.fetch("kmnist")


def test_the_published_checksums_are_well_formed():
    for name, (urls, sums) in datasets.SOURCES.items():
        assert sorted(sums) == sorted(FILES), name
        assert all(len(s) == 64 and int(s, 16) >= 0 for s in sums.values()), name
        assert urls and all(u.endswith("/") for u in urls), name
