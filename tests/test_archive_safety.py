"""extract() against hostile archives: links, devices, escaping names, collisions, and the
PATH_MAX symlink chain of CVE-2025-4517. Nothing outside the target may change."""
import io
import os
import stat
import tarfile
import zipfile

import pytest

from pipeline.datasets import download as dl


def _snapshot(root) -> dict:
    """Every entry under root (links not followed): kind, link target or bytes."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[p] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[p] = ("file", f.read())
            else:
                out[p] = ("dir" if stat.S_ISDIR(st.st_mode) else "other", None)
    return out


def _tar_bytes(add, mode="w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:
        add(tf)
    return buf.getvalue()


def _member(tf, name, *, data=None, sym=None, hard=None, kind=None):
    ti = tarfile.TarInfo(name)
    if data is not None:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        return
    if sym is not None:
        ti.type, ti.linkname = tarfile.SYMTYPE, sym
    elif hard is not None:
        ti.type, ti.linkname = tarfile.LNKTYPE, hard
    else:
        ti.type, ti.mode = kind, 0o777
    tf.addfile(ti)


def _refused(tmp_path, archive_bytes, suffix=".tar"):
    """Extract into a folder three levels down; assert a one-line refusal and no change."""
    arch = tmp_path / f"a{suffix}"
    arch.write_bytes(archive_bytes)
    (tmp_path / "flag").write_text("original")
    dest = tmp_path / "x" / "y" / "z" / "out"
    dest.parent.mkdir(parents=True)
    before = _snapshot(tmp_path)
    with pytest.raises(dl.UnsafeArchive) as e:
        dl.extract(arch, dest)
    assert "\n" not in str(e.value) and str(arch) in str(e.value)
    assert _snapshot(tmp_path) == before  # nothing created, overwritten or left behind
    return str(e.value)


def test_archive_cve_2025_4517_realpath_overflow(tmp_path):
    # Symlinks d_i -> long dir names nest until the resolved path passes PATH_MAX, so
    # os.path.realpath gives up resolving; a final link then climbs out through the chain.
    steps = "abcdefghijklmnop"
    # the extraction folder sits beside the destination with a longer name: allow for it
    dest_len = len(str(tmp_path / "x" / "y" / "z" / "out")) + 20
    comp = "d" * min(255, (os.pathconf(str(tmp_path), "PC_PATH_MAX") - dest_len) // (len(steps) + 1))
    # Every link target stays inside lexically; only the real resolution escapes:
    # p/llll -> up len(steps) = the extraction folder, escape -> four folders above it
    # (extraction folder, z, y, x -> tmp_path), where `flag` lives.

    def add(tf):
        long_path, short_path = "", ""
        for s in steps:
            _member(tf, os.path.join(long_path, comp), kind=tarfile.DIRTYPE)
            _member(tf, os.path.join(long_path, s), sym=comp)
            long_path = os.path.join(long_path, comp)
            short_path = os.path.join(short_path, s)
        top = os.path.join(short_path, "l" * 254)
        _member(tf, top, sym=os.path.join(*[".."] * len(steps)))
        _member(tf, "escape", sym=os.path.join(top, *[".."] * 4))
        _member(tf, "flaglink", hard=os.path.join("escape", "flag"))
        _member(tf, "flaglink", data=b"overwritten")
        _member(tf, "escape/newfile", data=b"new")

    msg = _refused(tmp_path, _tar_bytes(add))
    assert "link" in msg
    assert (tmp_path / "flag").read_text() == "original"
    assert not list(tmp_path.parent.rglob("newfile"))


@pytest.mark.parametrize("build, word", [
    (lambda tf: _member(tf, "../evil.txt", data=b"x"), ".."),
    (lambda tf: _member(tf, "ok/../../evil.txt", data=b"x"), ".."),
    (lambda tf: _member(tf, "/abs.txt", data=b"x"), "absolute"),
    (lambda tf: _member(tf, "ok/link", sym="../../../../flag"), "link"),
    (lambda tf: _member(tf, "ok/inside", sym="sibling"), "link"),
    (lambda tf: _member(tf, "ok/hard", hard="../../../../flag"), "link"),
    (lambda tf: _member(tf, "fifo", kind=tarfile.FIFOTYPE), "fifo"),
    (lambda tf: _member(tf, "dev", kind=tarfile.CHRTYPE), "device"),
    (lambda tf: (_member(tf, "a.txt", data=b"1"), _member(tf, "./a.txt", data=b"2")), "twice"),
    (lambda tf: (_member(tf, "a", data=b"1"), _member(tf, "a/b.txt", data=b"2")), "file"),
])
def test_archive_tar_member_refused(tmp_path, build, word):
    assert word in _refused(tmp_path, _tar_bytes(build))


def test_archive_refused_after_good_members_leaves_nothing(tmp_path):
    def add(tf):
        _member(tf, "good/a.txt", data=b"a" * 5000)
        _member(tf, "good/link", sym="a.txt")
    _refused(tmp_path, _tar_bytes(add, "w:gz"), ".tar.gz")


def _zip_bytes(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in entries:
            zi = zipfile.ZipInfo(name)
            zi.external_attr = mode << 16
            zf.writestr(zi, data)
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("entries, word", [
    ([("ok/link", "../../../../flag", stat.S_IFLNK | 0o777)], "link"),
    ([("../../evil.txt", "x", stat.S_IFREG | 0o644)], ".."),
    ([("..\\..\\evil.txt", "x", stat.S_IFREG | 0o644)], ".."),
    ([("/abs.txt", "x", stat.S_IFREG | 0o644)], "absolute"),
    ([("fifo", "", stat.S_IFIFO | 0o644)], "fifo"),
    ([("a.txt", "1", 0), ("a.txt", "2", 0)], "twice"),
])
def test_archive_zip_member_refused(tmp_path, entries, word):
    assert word in _refused(tmp_path, _zip_bytes(entries), ".zip")


FILES = {"corpus/a.txt": b"hello" * 3000, "corpus/sub/b.bin": bytes(range(256)) * 40,
         "corpus/empty": b"", "top.txt": b"top"}


def _check_tree(out):
    got = {os.path.relpath(os.path.join(d, n), out).replace(os.sep, "/")
           for d, _, fs in os.walk(out) for n in fs}
    assert got == set(FILES)
    for name, data in FILES.items():
        with open(os.path.join(out, name), "rb") as f:
            assert f.read() == data
    assert not any(n.startswith(".") for n in os.listdir(os.path.dirname(out)) if n != "out")


@pytest.mark.parametrize("mode, suffix", [("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"), ("w", ".tar")])
def test_archive_tar_extracts_right_bytes(tmp_path, mode, suffix):
    def add(tf):
        _member(tf, "corpus", kind=tarfile.DIRTYPE)
        _member(tf, "./corpus/sub/", kind=tarfile.DIRTYPE)
        for name, data in FILES.items():
            _member(tf, name, data=data)
    arch = tmp_path / f"a{suffix}"
    arch.write_bytes(_tar_bytes(add, mode))
    dest = tmp_path / "out"
    (dest / "stale").mkdir(parents=True)  # an earlier extraction is replaced whole
    assert dl.extract(arch, dest) == str(dest)
    _check_tree(str(dest))
    assert (dest / "corpus" / "sub").is_dir() and not (dest / "stale").exists()


def test_archive_zip_extracts_right_bytes(tmp_path):
    arch = tmp_path / "a.zip"
    with zipfile.ZipFile(arch, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("corpus/", "")
        for name, data in FILES.items():
            zf.writestr(name, data)
    dl.extract(arch, tmp_path / "out")
    _check_tree(str(tmp_path / "out"))


def test_archive_not_an_archive_is_one_line(tmp_path):
    bad = tmp_path / "junk.tar.gz"
    bad.write_bytes(b"not an archive at all" * 10)
    with pytest.raises(dl.BadArchive) as e:
        dl.extract(bad, tmp_path / "out")
    assert "\n" not in str(e.value) and "junk.tar.gz" in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode, suffix", [("w:bz2", ".tar.bz2"), ("w:gz", ".tar.gz"), ("w", ".tar")])
def test_archive_complete_detects_truncation(tmp_path, mode, suffix):
    def add(tf):
        for i in range(20):
            _member(tf, f"f{i}.bin", data=os.urandom(3000))
    data = _tar_bytes(add, mode)
    whole = tmp_path / f"whole{suffix}"
    whole.write_bytes(data)
    dl.archive_complete(str(whole))
    # cut mid-member, and (plain tar) exactly on a header boundary where tarfile stops quietly
    cuts = [len(data) // 2] + ([512 * 7 * 2] if mode == "w" else [])
    for cut in cuts:
        part = tmp_path / f"cut{cut}{suffix}"
        part.write_bytes(data[:cut])
        with pytest.raises(dl.BadArchive):
            dl.archive_complete(str(part))


def test_archive_planted_link_cannot_redirect_a_write(tmp_path):
    # extract() never makes links; if one were there anyway, the real-path check and
    # O_EXCL|O_NOFOLLOW still keep every write inside the extraction folder
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "sub")
    os.symlink(outside / "f.txt", root / "f.txt")
    tree = dl._Tree(str(root), "a.tar", dl._Budget("a.tar", 1 << 20))
    for name in ("sub/x.txt", "f.txt"):
        with pytest.raises(dl.UnsafeArchive):
            tree.file(name, name.split("/"), io.BytesIO(b"x"), 1)
    assert os.listdir(outside) == []


def test_archive_complete_zip(tmp_path):
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.bin", os.urandom(5000))
    dl.archive_complete(str(z))
    data = z.read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(dl.BadArchive):
        dl.archive_complete(str(tmp_path / "cut.zip"))


# ---------------------------------------------------------------- bombs and long names

class _Zeros(io.RawIOBase):
    """n zero bytes, streamed: a bomb is built without holding it in memory."""

    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


BOMB = 80 << 20  # past MIN_UNPACKED (64 MiB), and 1000x the ~80 kB it packs to


def _tar_bomb(path):
    with tarfile.open(path, "w:gz") as tf:
        ti = tarfile.TarInfo("zeros.bin")
        ti.size = BOMB
        tf.addfile(ti, io.BufferedReader(_Zeros(BOMB)))
    return path.read_bytes()


def _zip_bomb(path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.bin", "w") as f:
        src = _Zeros(BOMB)
        while block := src.read(1 << 20):
            f.write(block)
    return path.read_bytes()


@pytest.mark.parametrize("build, suffix", [(_tar_bomb, ".tar.gz"), (_zip_bomb, ".zip")])
def test_archive_bomb_refused_before_a_byte_is_written(tmp_path, build, suffix):
    data = build(tmp_path / f"bomb{suffix}")
    assert len(data) < BOMB / 500
    msg = _refused(tmp_path, data, suffix)  # nothing written, nothing left behind
    assert "decompression bomb" in msg and "zeros.bin" in msg
    with pytest.raises(dl.BadArchive, match="decompression bomb"):  # nor learnt on download
        dl.archive_complete(str(tmp_path / f"bomb{suffix}"))


@pytest.mark.parametrize("size, count", [(10_000, 60), (0, 1200)])
def test_archive_total_cap_counts_bytes_and_members(tmp_path, size, count):
    # many ordinary members past the cap together: written ones are removed again; empty
    # files count too (each costs a header), so a file-count bomb stops as well
    def add(tf):
        for i in range(count):
            _member(tf, f"d/f{i}.bin", data=bytes(size))
    arch = tmp_path / "many.tar.gz"
    arch.write_bytes(_tar_bytes(add, "w:gz"))
    with pytest.raises(dl.UnsafeArchive, match="more than 524,288 bytes"):  # 60 x 10,512 or 1,200 x 512 bytes
        dl.extract(arch, tmp_path / "out", max_bytes=1 << 19)
    assert sorted(os.listdir(tmp_path)) == ["many.tar.gz"]
    dl.extract(arch, tmp_path / "out", max_bytes=count * (size + 512) + 1024)  # fits: extracted
    assert len(os.listdir(tmp_path / "out" / "d")) == count


@pytest.mark.parametrize("name", [
    "/".join(["d" * 200] * 25) + "/f.txt",  # 5,030 characters: past PATH_MAX (4096)
    "ok/" + "n" * 300,                      # one component past NAME_MAX (255)
])
def test_archive_name_too_long_is_one_short_line(tmp_path, name):
    msg = _refused(tmp_path, _tar_bytes(lambda tf: _member(tf, name, data=b"x")))
    assert "too long" in msg and len(msg) < 400
