"""Downloads against a local HTTP server: checksums, resume after interruption, unsafe archives."""
import hashlib
import http.server
import io
import os
import tarfile
import threading
import zipfile

import pytest

from pipeline.datasets import download as dl


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    cut_once: set = set()   # paths whose first response stops half way
    ranges: list = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        self.ranges.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in self.cut_once:
            self.cut_once.discard(self.path)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    _Handler.files, _Handler.cut_once, _Handler.ranges = {}, set(), []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    th.start()
    yield _Handler, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data, kind, link in members:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                ti.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                ti.linkname = link
                tf.addfile(ti)
    return buf.getvalue()


GOOD = _tar([("corpus/a.txt", b"hello" * 1000, "file", None),
             ("corpus/sub/b.txt", b"world", "file", None),
             ("corpus/sub/link", None, "sym", "b.txt")])


def test_data_download_good_checksum_and_extract(server, tmp_path):
    h, base = server
    h.files["/c.tar.gz"] = GOOD
    sha = hashlib.sha256(GOOD).hexdigest()
    dest = tmp_path / "c.tar.gz"
    got = dl.fetch(f"{base}/c.tar.gz", str(dest), sha256=sha, progress=False)
    assert got["sha256"] == sha and dest.read_bytes() == GOOD
    assert not os.path.exists(f"{dest}.part")
    out = dl.extract(dest, tmp_path / "x")
    assert (tmp_path / "x/corpus/sub/b.txt").read_bytes() == b"world"
    assert os.path.islink(os.path.join(out, "corpus/sub/link"))


def test_data_download_bad_checksum_names_file_and_hash(server, tmp_path):
    h, base = server
    h.files["/c.tar.gz"] = GOOD
    dest = tmp_path / "c.tar.gz"
    with pytest.raises(dl.IntegrityError) as e:
        dl.fetch(f"{base}/c.tar.gz", str(dest), sha256="0" * 64, progress=False)
    assert "c.tar.gz" in str(e.value) and "0" * 64 in str(e.value)
    assert not dest.exists() and not os.path.exists(f"{dest}.part")


def test_data_download_records_and_checks_lock(server, tmp_path):
    h, base = server
    h.files["/f.bin"] = b"abc" * 100
    lock = tmp_path / "lock.json"
    dl.fetch(f"{base}/f.bin", str(tmp_path / "f.bin"), lock_path=str(lock), progress=False)
    assert dl.read_lock(str(lock))["f.bin"]["sha256"] == hashlib.sha256(b"abc" * 100).hexdigest()
    h.files["/f.bin"] = b"xyz" * 100  # publisher changed the file: the lock catches it
    with pytest.raises(dl.IntegrityError):
        dl.fetch(f"{base}/f.bin", str(tmp_path / "g" / "f.bin"), lock_path=str(lock), progress=False)


def test_data_download_interrupted_transfer_resumes(server, tmp_path):
    h, base = server
    h.files["/c.tar.gz"] = GOOD
    h.cut_once.add("/c.tar.gz")
    dest = tmp_path / "c.tar.gz"
    with pytest.raises(dl.DownloadError) as e:  # no retries: the part file stays
        dl.fetch(f"{base}/c.tar.gz", str(dest), sha256=hashlib.sha256(GOOD).hexdigest(),
                 retries=0, progress=False)
    assert "c.tar.gz" in str(e.value)
    part = f"{dest}.part"
    assert 0 < os.path.getsize(part) < len(GOOD)
    dl.fetch(f"{base}/c.tar.gz", str(dest), sha256=hashlib.sha256(GOOD).hexdigest(), progress=False)
    assert dest.read_bytes() == GOOD
    assert h.ranges[-1] == f"bytes={len(GOOD) // 2}-"


@pytest.mark.parametrize("members", [
    [("../evil.txt", b"x", "file", None)],
    [("/abs.txt", b"x", "file", None)],
    [("ok/link", None, "sym", "../../etc/passwd")],
    [("ok/hard", None, "hard", "../outside")],
])
def test_data_download_malicious_tar_rejected(server, tmp_path, members):
    h, base = server
    h.files["/m.tar.gz"] = _tar(members)
    dest = tmp_path / "m.tar.gz"
    dl.fetch(f"{base}/m.tar.gz", str(dest), lock_path=str(tmp_path / "l.json"), progress=False)
    with pytest.raises(dl.UnsafeArchive):
        dl.extract(dest, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_data_download_malicious_zip_rejected(tmp_path):
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../../evil.txt", "x")
    with pytest.raises(dl.UnsafeArchive):
        dl.extract(z, tmp_path / "out")


def test_data_download_missing_url_is_clear(server, tmp_path):
    _, base = server
    with pytest.raises(dl.DownloadError) as e:
        dl.fetch(f"{base}/nope", str(tmp_path / "nope"), lock_path=str(tmp_path / "l.json"),
                 retries=0, progress=False)
    assert "nope" in str(e.value)
