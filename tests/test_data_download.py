"""Downloads against a local HTTP server: checksums, resume after interruption, hashes
learnt only from complete transfers, pins, unreachable sources, unsafe archives."""
import hashlib
import http.server
import io
import json
import os
import socket
import tarfile
import threading
import zipfile

import pytest

from pipeline.datasets import download as dl
from pipeline.datasets import free_speech, mnist
from pipeline.errors import UserError


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    cut_once: set = set()   # paths whose first response stops half way (or at cut_at)
    cut_at: dict = {}
    no_length: set = set()  # paths served without Content-Length, like the .amat host
    ranges: list = []
    endless: set = set()    # paths streamed with no length and no end (64 MiB here, so a test ends)
    announce: dict = {}     # path -> a Content-Length larger than what is sent

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path in self.endless:
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(1024):
                    self.wfile.write(bytes(1 << 16))
            except (BrokenPipeError, ConnectionResetError):  # the client hung up: wanted
                pass
            return
        if self.path in self.announce:
            self.send_response(200)
            self.send_header("Content-Length", str(self.announce[self.path]))
            self.end_headers()
            self.wfile.write(bytes(1000))
            return
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
        if self.path not in self.no_length:
            self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in self.cut_once:
            self.cut_once.discard(self.path)
            stop = self.cut_at.get(self.path, start + (len(body) - start) // 2)
            self.wfile.write(body[start:stop])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    _Handler.files, _Handler.cut_once, _Handler.ranges = {}, set(), []
    _Handler.cut_at, _Handler.no_length = {}, set()
    _Handler.endless, _Handler.announce = set(), {}
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
             ("corpus/sub/b.txt", b"world", "file", None)])


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
    assert (tmp_path / "x/corpus/a.txt").read_bytes() == b"hello" * 1000
    assert out == str(tmp_path / "x")


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


# ---------------------------------------------------------------- learning only whole files

def _one_line_error(e):
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)
    return str(e.value)


def test_data_download_cut_without_length_is_not_learnt(server, tmp_path):
    h, base = server
    body = b"abc" * 1000
    h.files["/f.bin"] = body
    h.no_length.add("/f.bin")
    h.cut_once.add("/f.bin")  # looks like a clean end: no length to compare with
    lock, dest = tmp_path / "lock.json", tmp_path / "f.bin"
    with pytest.raises(dl.IncompleteDownload) as e:
        dl.fetch(f"{base}/f.bin", str(dest), lock_path=str(lock), progress=False)
    msg = _one_line_error(e)
    assert "could not be verified complete" in msg and "pin" in msg
    assert not dest.exists() and not lock.exists()
    # the user pins the real hash: the kept part is resumed and checked against it
    pins = tmp_path / "pins.yaml"
    pins.write_text(f"f.bin:\n  sha256: {hashlib.sha256(body).hexdigest()}\n  bytes: {len(body)}\n")
    got = dl.fetch(f"{base}/f.bin", str(dest), lock_path=str(lock), pins=dl.load_pins(str(pins)),
                   progress=False)
    assert dest.read_bytes() == body and got["sha256"] == hashlib.sha256(body).hexdigest()
    assert h.ranges[-1] == f"bytes={len(body) // 2}-"


def _lines_check(n):
    def check(path):
        with open(path, "rb") as f:
            got = f.read().count(b"\n")
        if got != n:
            raise ValueError(f"{got} lines, expected {n}")
    return check


def test_data_download_cut_then_whole_with_completeness_check(server, tmp_path):
    h, base = server
    body = b"0 1 0\n" * 500
    h.files["/d.txt"] = body
    h.no_length.add("/d.txt")
    h.cut_once.add("/d.txt")
    h.cut_at["/d.txt"] = 6 * 200  # cut on a line boundary
    lock, dest = tmp_path / "raw" / "checksums.json", tmp_path / "raw" / "d.txt"
    with pytest.raises(dl.IncompleteDownload) as e:
        dl.fetch(f"{base}/d.txt", str(dest), lock_path=str(lock), complete=_lines_check(500),
                 progress=False)
    assert "200 lines, expected 500" in _one_line_error(e)
    assert not dest.exists() and not lock.exists() and not os.path.exists(f"{dest}.part")
    got = dl.fetch(f"{base}/d.txt", str(dest), lock_path=str(lock), complete=_lines_check(500),
                   progress=False)
    assert dest.read_bytes() == body
    assert dl.read_lock(str(lock))["d.txt"] == {"url": f"{base}/d.txt", "sha256": got["sha256"],
                                                "bytes": len(body)}
    # a later, correct download into another folder passes against the learnt hash
    dl.fetch(f"{base}/d.txt", str(tmp_path / "again" / "d.txt"), lock_path=str(lock), progress=False)


def test_data_download_length_matches_but_check_fails(server, tmp_path):
    h, base = server
    h.files["/d.txt"] = b"1\n" * 10
    lock = tmp_path / "lock.json"
    with pytest.raises(dl.IncompleteDownload):
        dl.fetch(f"{base}/d.txt", str(tmp_path / "d.txt"), lock_path=str(lock),
                 complete=_lines_check(11), progress=False)
    assert not lock.exists() and not (tmp_path / "d.txt").exists()


def test_data_download_existing_file_needs_proof(server, tmp_path):
    _, base = server
    dest, lock = tmp_path / "f.txt", tmp_path / "lock.json"
    dest.write_bytes(b"1\n" * 3)
    with pytest.raises(dl.IncompleteDownload) as e:  # placed by hand, nothing to check it by
        dl.fetch(f"{base}/f.txt", str(dest), lock_path=str(lock), progress=False)
    assert "delete it" in _one_line_error(e) and not lock.exists()
    with pytest.raises(dl.IncompleteDownload):
        dl.fetch(f"{base}/f.txt", str(dest), lock_path=str(lock), complete=_lines_check(4), progress=False)
    dl.fetch(f"{base}/f.txt", str(dest), lock_path=str(lock), complete=_lines_check(3), progress=False)
    assert dl.read_lock(str(lock))["f.txt"]["sha256"] == hashlib.sha256(b"1\n" * 3).hexdigest()


def test_data_download_without_lock_writes_nothing_else(server, tmp_path):
    h, base = server
    h.files["/f.bin"] = b"x" * 100
    pkg = os.path.dirname(dl.__file__)
    before = sorted(os.listdir(pkg))
    dl.fetch(f"{base}/f.bin", str(tmp_path / "f.bin"), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]
    assert sorted(os.listdir(pkg)) == before and "checksums.json" not in before


# ---------------------------------------------------------------- pins

def test_data_download_pin_overrides_lock_and_names_pin_file(server, tmp_path):
    h, base = server
    h.files["/f.bin"] = b"new" * 10
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"f.bin": {"sha256": hashlib.sha256(b"new" * 10).hexdigest()}}))
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({"f.bin": {"sha256": "ab" * 32, "url": f"{base}/f.bin"}}))
    with pytest.raises(dl.IntegrityError) as e:
        dl.fetch(f"{base}/f.bin", str(tmp_path / "f.bin"), lock_path=str(lock),
                 pins=dl.load_pins(str(pins)), progress=False)
    msg = _one_line_error(e)
    assert "ab" * 32 in msg and "pins.json" in msg and not (tmp_path / "f.bin").exists()


def test_data_download_pin_size_mismatch(server, tmp_path):
    h, base = server
    body = b"q" * 50
    h.files["/f.bin"] = body
    pins = {"f.bin": {"sha256": hashlib.sha256(body).hexdigest(), "bytes": 49, "url": None,
                      "file": "pins.yaml"}}
    with pytest.raises(dl.IntegrityError) as e:
        dl.fetch(f"{base}/f.bin", str(tmp_path / "f.bin"), pins=pins, progress=False)
    assert "49" in _one_line_error(e) and "pins.yaml" in str(e.value)


@pytest.mark.parametrize("text, word", [
    ("- a\n- b\n", "must map"),
    ("f.bin: {sha256: 1234}\n", "64 hex"),
    ("f.bin: {sha256: " + "a" * 64 + ", bytes: -3}\n", "bytes"),
    ("f.bin: [unclosed\n", "not valid"),
])
def test_data_download_bad_pin_file_is_one_line(tmp_path, text, word):
    p = tmp_path / "pins.yaml"
    p.write_text(text)
    with pytest.raises(dl.BadPins) as e:
        dl.load_pins(str(p))
    assert word in _one_line_error(e) and str(p) in str(e.value)


def test_data_download_load_pins(tmp_path):
    assert dl.load_pins(None) == {}
    p = tmp_path / "pins.yaml"
    p.write_text("LJSpeech-1.1.tar.bz2:\n  sha256: " + "AB" * 32 + "\n  bytes: 7\n  url: http://x/y\n")
    assert dl.load_pins(str(p)) == {"LJSpeech-1.1.tar.bz2": {
        "sha256": "ab" * 32, "bytes": 7, "url": "http://x/y", "file": str(p)}}
    with pytest.raises(dl.BadPins):
        dl.load_pins(str(tmp_path / "missing.yaml"))


# ---------------------------------------------------------------- unreachable sources

def test_data_download_unreachable_names_url_and_param(tmp_path):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/corpus.tar.gz"
    with pytest.raises(dl.DownloadError) as e:
        dl.fetch(url, str(tmp_path / "c.tar.gz"), param="benchmarks.blizzard.source",
                 retries=1, timeout=5, progress=False)
    msg = _one_line_error(e)
    assert url in msg and "benchmarks.blizzard.source" in msg


def test_data_download_404_and_bad_url_name_param(server, tmp_path):
    _, base = server
    with pytest.raises(dl.DownloadError) as e:
        dl.fetch(f"{base}/gone", str(tmp_path / "g"), param="data.name", progress=False)
    assert "HTTP 404" in _one_line_error(e) and "data.name" in str(e.value)
    with pytest.raises(dl.DownloadError) as e:
        dl.fetch("not a url", str(tmp_path / "g"), param="data.name", progress=False)
    assert "not a url" in _one_line_error(e) and "data.name" in str(e.value)


def test_data_download_oversized_part_starts_over(server, tmp_path):
    h, base = server
    h.files["/f.bin"] = b"z" * 100
    dest = tmp_path / "f.bin"
    with open(f"{dest}.part", "wb") as f:  # left from a different, longer file
        f.write(b"y" * 300)
    got = dl.fetch(f"{base}/f.bin", str(dest), sha256=hashlib.sha256(b"z" * 100).hexdigest(),
                   progress=False)
    assert dest.read_bytes() == b"z" * 100 and got["sha256"]


# ---------------------------------------------------------------- the two callers

def _amat(n):
    row = " ".join("01"[(i * 7) % 3 == 0] for i in range(mnist.PIXELS)) + "\n"
    return row.encode() * n


def test_data_download_binarized_mnist_learns_only_whole_files(server, tmp_path, monkeypatch):
    h, base = server
    sizes = {"train": 6, "valid": 3, "test": 2}
    monkeypatch.setattr(mnist, "BASE", f"{base}/mnist/")
    monkeypatch.setattr(mnist, "EXPECTED", sizes)
    for s, n in sizes.items():
        h.files[f"/mnist/{mnist.amat_name(s)}"] = _amat(n)
        h.no_length.add(f"/mnist/{mnist.amat_name(s)}")
    train = f"/mnist/{mnist.amat_name('train')}"
    h.cut_once.add(train)
    h.cut_at[train] = len(_amat(4))  # a whole number of lines: only the count shows the cut
    raw, lock = tmp_path / "raw", tmp_path / "raw" / "checksums.json"
    with pytest.raises(dl.IncompleteDownload) as e:
        mnist.download_binarized(str(raw), progress=False, lock_path=str(lock))
    assert "4 lines, expected 6" in _one_line_error(e) and not lock.exists()
    got = mnist.download_binarized(str(raw), progress=False, lock_path=str(lock))
    assert got == {mnist.amat_name(s): hashlib.sha256(_amat(n)).hexdigest() for s, n in sizes.items()}
    assert {k: v["sha256"] for k, v in dl.read_lock(str(lock)).items()} == got


def test_data_download_free_speech_archive_must_list_completely(server, tmp_path, monkeypatch):
    h, base = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tf:
        for i in range(30):
            data = os.urandom(2000)
            ti = tarfile.TarInfo(f"LJSpeech-1.1/wavs/LJ{i:03d}.wav")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    body = buf.getvalue()
    src = free_speech.SOURCES["ljspeech"]
    monkeypatch.setitem(free_speech.SOURCES, "ljspeech",
                        free_speech.Source(f"{base}/lj.tar.bz2", src.archive, src.folder,
                                           src.protocol, src.licence, src.size))
    h.files["/lj.tar.bz2"] = body
    h.no_length.add("/lj.tar.bz2")
    h.cut_once.add("/lj.tar.bz2")
    raw, lock = tmp_path / "raw", tmp_path / "checksums.json"
    with pytest.raises(dl.IncompleteDownload) as e:
        free_speech.download("ljspeech", str(raw), progress=False, lock_path=str(lock))
    assert src.archive in _one_line_error(e) and not lock.exists()
    assert not (raw / "ljspeech").exists()
    got = free_speech.download("ljspeech", str(raw), progress=False, lock_path=str(lock))
    assert got == {src.archive: hashlib.sha256(body).hexdigest()}
    assert dl.read_lock(str(lock))[src.archive]["sha256"] == got[src.archive]
    assert len(os.listdir(raw / "ljspeech" / "LJSpeech-1.1" / "wavs")) == 30


def test_data_download_callers_name_the_param(server, tmp_path, monkeypatch):
    _, base = server
    monkeypatch.setattr(mnist, "BASE", f"{base}/missing/")
    with pytest.raises(dl.DownloadError) as e:
        mnist.download_binarized(str(tmp_path), progress=False, param="benchmarks.mnist.source")
    assert "benchmarks.mnist.source" in _one_line_error(e) and f"{base}/missing/" in str(e.value)
    src = free_speech.SOURCES["ljspeech"]
    monkeypatch.setitem(free_speech.SOURCES, "ljspeech", free_speech.Source(
        f"{base}/missing.tar.bz2", src.archive, src.folder, src.protocol, src.licence, src.size))
    with pytest.raises(dl.DownloadError) as e:
        free_speech.download("ljspeech", str(tmp_path), progress=False, param="benchmarks.blizzard.source")
    assert "benchmarks.blizzard.source" in _one_line_error(e)


# ---------------------------------------------------------------- endless and oversized streams

def _nothing_kept(dest):
    assert not os.path.exists(dest) and not os.path.exists(f"{dest}.part")


@pytest.mark.parametrize("known", [True, False])
def test_data_download_endless_stream_stops_at_the_cap(server, tmp_path, monkeypatch, known):
    h, base = server
    h.endless.add("/f.bin")
    monkeypatch.setattr(dl, "MAX_DOWNLOAD", 300_000)  # the cap of a file of unknown size
    dest = tmp_path / "f.bin"
    with pytest.raises(dl.TooLarge) as e:
        dl.fetch(f"{base}/f.bin", str(dest), size=100_000 if known else None,
                 lock_path=str(tmp_path / "l.json"), complete=lambda p: None, progress=False)
    msg = _one_line_error(e)
    assert f"{base}/f.bin" in msg and ("125,000" if known else "300,000") in msg
    _nothing_kept(dest)


def test_data_download_announced_length_past_the_cap_is_refused_unread(server, tmp_path):
    h, base = server
    h.announce["/big.tar.gz"] = 10 << 30  # 10 GiB said, past MAX_DOWNLOAD: not even started
    dest = tmp_path / "big.tar.gz"
    with pytest.raises(dl.TooLarge) as e:
        dl.fetch(f"{base}/big.tar.gz", str(dest), sha256="0" * 64, retries=0, progress=False)
    assert "4,294,967,296" in _one_line_error(e)
    _nothing_kept(dest)


def test_data_download_binarized_mnist_endless_host_is_cut_at_its_known_size(server, tmp_path,
                                                                              monkeypatch):
    # the .amat host sends no length and no publisher hash exists: only the known size bounds it
    h, base = server
    sizes = {"train": 6, "valid": 3, "test": 2}
    monkeypatch.setattr(mnist, "BASE", f"{base}/mnist/")
    monkeypatch.setattr(mnist, "EXPECTED", sizes)
    h.endless.add(f"/mnist/{mnist.amat_name('train')}")
    raw = tmp_path / "raw"
    with pytest.raises(dl.TooLarge) as e:
        mnist.download_binarized(str(raw), progress=False, lock_path=str(raw / "checksums.json"))
    assert f"{6 * mnist.LINE_BYTES * 5 // 4:,}" in _one_line_error(e)
    _nothing_kept(raw / mnist.amat_name("train"))
    assert not (raw / "checksums.json").exists()
