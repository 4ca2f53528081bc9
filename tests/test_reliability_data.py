"""Downloads are verified before use: a mirror that serves a corrupt file, or breaks off in the
middle of one, is passed over for the next, and a bad download never replaces or leaves a file.
(The plain fallback cases live in tests/test_data.py.) Served from 127.0.0.1 only."""
import http.server
import threading
from pathlib import Path

import pytest

from fastnn.data import FILES, download, load_mnist
from fastnn.errors import DataError


class Mirrors(http.server.BaseHTTPRequestHandler):
    """/good/<file> the real bytes; /corrupt/<file> one byte changed; /broken/<file> announces the whole
    file but sends half of it and hangs up; /wrong/<file> another file's (valid) bytes."""
    source: Path = None
    hits: list = None

    def do_GET(self):
        kind, _, name = self.path.strip("/").partition("/")
        self.hits.append((kind, name))
        content = (self.source / name).read_bytes()
        if kind == "corrupt":
            content = content[:100] + bytes([content[100] ^ 1]) + content[101:]
        elif kind == "wrong":
            content = (self.source / "t10k-labels-idx1-ubyte.gz").read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content[:len(content) // 2] if kind == "broken" else content)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(mnist_dir):
    handler = type("Handler", (Mirrors,), {"source": mnist_dir, "hits": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    server.shutdown()
    server.server_close()


def test_corrupt_broken_and_wrong_mirrors_are_passed_over(tmp_path, mirror):
    url, hits = mirror
    mirrors = [f"{url}/corrupt/", f"{url}/broken/", f"{url}/wrong/", f"{url}/good/"]
    paths = download("mnist", tmp_path, mirrors=mirrors, progress=False)
    assert set(paths) == set(FILES)
    # every file was tried on each bad mirror first, in order; "wrong" happens to be right for t10k-labels
    for name in FILES:
        tried = [kind for kind, file in hits if file == f"{name}.gz"]
        assert tried == (["corrupt", "broken", "wrong"] if name == FILES[3] else
                         ["corrupt", "broken", "wrong", "good"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{name}.gz" for name in FILES)
    load_mnist("mnist", tmp_path, download_missing=False, progress=False)


def test_a_bad_download_leaves_an_existing_file_alone(tmp_path, mirror, mnist_dir):
    url, _ = mirror
    existing = tmp_path / f"{FILES[0]}.gz"  # the first file download() fetches
    existing.write_bytes((mnist_dir / f"{FILES[0]}.gz").read_bytes())
    before = existing.read_bytes()
    with pytest.raises(DataError) as info:
        download("mnist", tmp_path, mirrors=[f"{url}/corrupt/", f"{url}/broken/"], progress=False)
    message = str(info.value)
    assert f"could not download {FILES[0]}.gz" in message and "/corrupt/" in message and "/broken/" in message
    assert message.count("truncated or corrupt") == 2
    assert existing.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing.name]  # no partial or temporary files


def test_unreachable_and_malformed_mirrors_are_clear_errors(tmp_path):
    with pytest.raises(DataError) as info:
        download("mnist", tmp_path, mirrors=["http://127.0.0.1:9/", "not a url/"], progress=False)
    message = str(info.value)
    assert "http://127.0.0.1:9/" in message and "not a url" in message
    assert list(tmp_path.iterdir()) == []
