"""Verified, resumable downloads and safe archive extraction (urllib + hashlib + tqdm).

Integrity, strongest first: the publisher's checksum; a sha256 the user pinned in a pin
file (load_pins); a sha256 learnt on an earlier download and kept in a lock file chosen
by the caller (lock_path, stored with the raw data, never under pipeline/). A hash is
learnt only from a transfer known to be complete: the Content-Length matched and the
caller's `complete` check (if any) passed, or, without a length, that check passed.

Extraction writes regular files and folders only, each streamed by this module into a
fresh folder that is swapped in whole; links, devices and fifos are refused.

Caps, because a source without a publisher hash is trusted only after the bytes are on
disk: a download stops past its known size plus a margin (MAX_DOWNLOAD when the size is
not known), and an archive may unpack to MAX_RATIO times its own size (at least
MIN_UNPACKED); each member is checked against what is left before it is written. Either
cap stops with one line and leaves nothing behind.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import json
import lzma
import os
import re
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib

from ..errors import UserError
from .storage import atomic_dir, write_json


class DownloadError(UserError):
    pass


class IntegrityError(DownloadError):
    pass


class IncompleteDownload(DownloadError):
    pass


class BadPins(UserError):
    pass


class BadArchive(UserError):
    pass


class UnsafeArchive(BadArchive):
    pass


class TooLarge(IntegrityError):  # more bytes than the file can have: not the expected file
    pass


MAX_DOWNLOAD = 4 << 30  # a download of unknown size; the largest source here is 2.6 GB
SIZE_MARGIN = 1.25      # a known size may grow this much (a republished file) before a cut
MAX_RATIO = 20          # unpacked / packed bytes: text archives ~4, audio ~1.3
MIN_UNPACKED = 64 << 20  # what any archive may unpack to, whatever its ratio
MEMBER_COST = 512       # charged per member besides its bytes (a tar header): caps file counts


def _one_line(x) -> str:
    return " ".join(str(x).split())


def _show(name) -> str:
    """A member name short enough for a one-line message."""
    return repr(name) if len(name) <= 120 else repr(name[:60] + "..." + name[-40:])


# ---------------------------------------------------------------- hashes, lock, pins

def _hashes(path, algos=("sha256", "md5")) -> dict:
    hs = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            for h in hs.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hs.items()}


def read_lock(lock_path) -> dict:
    """The learnt hashes {name: {url, sha256, bytes}}; {} when there is no lock file yet."""
    if lock_path is None or not os.path.exists(lock_path):
        return {}
    try:
        with open(lock_path) as f:
            lock = json.load(f)
    except ValueError as e:
        raise DownloadError(f"{lock_path} is not valid JSON ({_one_line(e)}): delete it to "
                            "learn the hashes again") from None
    if not isinstance(lock, dict):
        raise DownloadError(f"{lock_path} must hold a JSON object: delete it to learn the hashes again")
    return lock


def record_lock(name, url, sha256, size, lock_path) -> None:
    lock = read_lock(lock_path)
    lock[name] = {"url": url, "sha256": sha256, "bytes": size}
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    write_json(lock_path, lock)


_HEX64 = re.compile(r"[0-9a-f]{64}")


def load_pins(path) -> dict:
    """A user-committed pin file (YAML or JSON): name -> {sha256, bytes?, url?}.

    Returns {name: {"sha256", "bytes", "url", "file"}}; None gives {}. A pinned sha256 is
    the expected hash of that download whatever the lock file says.
    """
    if path is None:
        return {}
    if not os.path.exists(path):
        raise BadPins(f"pin file {path} does not exist: create it or leave the pin file unset")
    import yaml
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise BadPins(f"{path} is not valid YAML/JSON ({_one_line(e)})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise BadPins(f"{path} must map file names to {{sha256, bytes, url}}")
    pins = {}
    for name, entry in raw.items():
        sha = str(entry.get("sha256", "")).lower() if isinstance(entry, dict) else ""
        if not _HEX64.fullmatch(sha):
            raise BadPins(f"{path}: pin {name!r} needs a sha256 of 64 hex digits")
        size = entry.get("bytes")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise BadPins(f"{path}: pin {name!r} has bytes {size!r}, expected a whole number >= 0")
        pins[str(name)] = {"sha256": sha, "bytes": size, "url": entry.get("url"), "file": str(path)}
    return pins


def _expectations(name, sha256, md5, pins, lock_path) -> list:
    """(algorithm, hex digest, where it comes from) for every hash the file must match."""
    want = []
    if sha256:
        want.append(("sha256", sha256.lower(), "the publisher's"))
    if md5:
        want.append(("md5", md5.lower(), "the publisher's"))
    pin = (pins or {}).get(name)
    if pin:
        want.append(("sha256", pin["sha256"], f"the pinned ({pin.get('file', 'pins')})"))
    if not want:
        learnt = read_lock(lock_path).get(name, {}).get("sha256")
        if learnt:
            want.append(("sha256", learnt, f"the recorded ({lock_path})"))
    return want


def verify(path, *, sha256=None, md5=None, name=None, expect=None) -> dict:
    """Check a file against expected hashes; the error names the file and both hashes.

    expect: (algorithm, digest, source) triples; sha256/md5 are the publisher's.
    """
    name = name or path
    expect = list(expect or []) + [(a, h, "the publisher's") for a, h in
                                   (("sha256", sha256), ("md5", md5)) if h]
    got = _hashes(path)
    for algo, digest, source in expect:
        if got[algo] != digest:
            raise IntegrityError(f"{name}: {algo} {got[algo]} does not match {source} {digest} "
                                 "(truncated or corrupt file: delete it and download again)")
    return got


# ---------------------------------------------------------------- transfer

def _content_range(value):
    """'bytes 100-199/200' -> (100, 200); 'bytes */200' -> (None, 200); total None if '*'."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    return start, (int(m.group(2)) if m.group(2) != "*" else None)


def _cap(size, pin_size, pin_file) -> tuple[int, str]:
    """The most bytes a download may bring, and why."""
    if pin_size is not None:
        return pin_size, f"the size pinned in {pin_file}"
    if size is not None:
        return int(size * SIZE_MARGIN), f"its known size, {size:,} bytes, + {SIZE_MARGIN - 1:.0%}"
    return MAX_DOWNLOAD, "the limit for a download of unknown size"


def _too_large(url, part, cap) -> TooLarge:
    if os.path.exists(part):
        os.remove(part)  # nothing of it is worth resuming
    dest = part[:-len(".part")]
    return TooLarge(f"{url} sends more than {cap[0]:,} bytes ({cap[1]}): stopped, nothing kept. "
                    f"A server that never ends its stream, or not the expected file; if the file "
                    f"really is that large, download it by hand to {dest}")


def _transfer(url, part, timeout, progress, cap) -> int | None:
    """One HTTP request appending to `part` from its current size; returns the total size
    the server announced (None when it announced none). Stops past cap = (bytes, why)."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if have > cap[0]:  # left by a longer file: start over
        os.remove(part)
        have = 0
    req = urllib.request.Request(url, headers={"User-Agent": "zforcing-repro/1.0"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part may be whole
            return _content_range(e.headers.get("Content-Range"))[1]
        raise
    with resp:
        start, total = 0, None
        if have and resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:  # not the range asked for: cannot append safely
                raise http.client.HTTPException(f"server answered range {start} for {have}")
        length = resp.headers.get("Content-Length")
        if total is None and length is not None and length.isdigit():
            total = start + int(length)
        if total is not None and total > cap[0]:
            raise _too_large(url, part, cap)
        from tqdm import tqdm
        got, over = start, False
        with open(part, "ab" if start else "wb") as f, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, disable=not progress,
                desc=os.path.basename(part)[:-5], leave=False) as bar:
            while block := resp.read(1 << 16):
                got += len(block)
                if got > cap[0]:  # no length, or one the body overruns: stop here
                    over = True
                    break
                f.write(block)
                bar.update(len(block))
    if over:
        raise _too_large(url, part, cap)
    return total


def _download(url, part, *, retries, timeout, progress, unreachable, cap) -> int | None:
    """Bring `part` to the full size, resuming across retries; returns the announced size."""
    err = None
    for _ in range(retries + 1):
        try:
            total = _transfer(url, part, timeout, progress, cap)
        except ValueError as e:  # malformed URL: asking again will not help
            raise DownloadError(unreachable(f"not a valid URL: {_one_line(e)}")) from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
            err = e
            if isinstance(e, urllib.error.HTTPError) and e.code < 500:
                break  # a 404 does not get better by asking again
            continue
        size = os.path.getsize(part) if os.path.exists(part) else 0
        if total is not None and size > total:  # longer than the file: start over
            os.remove(part)
            err = f"{size} bytes kept but the file has {total}"
            continue
        if total is None or size == total:
            return total
        err = f"connection closed at {size} of {total} bytes"
    if isinstance(err, urllib.error.HTTPError):
        err = f"HTTP {err.code} {err.reason}"
    elif isinstance(err, urllib.error.URLError):
        err = err.reason
    raise DownloadError(unreachable(_one_line(err)))


def _check_complete(complete, path, name) -> str | None:
    """Run the caller's completeness check; the reason it failed, or None."""
    try:
        complete(path)
    except (UserError, ValueError, OSError, EOFError, tarfile.TarError, zipfile.BadZipFile,
            zlib.error, lzma.LZMAError) as e:
        return _one_line(e) or type(e).__name__
    return None


def fetch(url, dest, *, sha256=None, md5=None, lock_name=None, lock_path=None, pins=None,
          complete=None, param=None, size=None, retries=3, timeout=60, progress=True) -> dict:
    """Download url to dest (resuming dest.part), verify, then move into place atomically.

    sha256/md5: the publisher's checksum. pins: load_pins() output; a pin under
    `lock_name` (default: dest's file name) is expected too. Without either, the sha256
    under lock_name in `lock_path` is expected, or, on first download, learnt into it --
    only from a transfer known to be complete (see the module docstring).
    complete: callable(path) raising on an incomplete file (an archive that does not list
    to its end, a data file short of lines). param: the parameter that chose `url`, named
    when it cannot be reached. size: the file's known size in bytes; a transfer stops past
    it plus SIZE_MARGIN (a pinned size is exact; MAX_DOWNLOAD when neither is known).
    Returns the file's {"sha256", "md5"}.
    """
    name = lock_name or os.path.basename(dest)
    expect = _expectations(name, sha256, md5, pins, lock_path)
    pin_size = ((pins or {}).get(name) or {}).get("bytes")
    if os.path.exists(dest):
        return _accept_existing(url, dest, name, expect, pin_size, complete, lock_path)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = f"{dest}.part"

    def unreachable(why):
        size = os.path.getsize(part) if os.path.exists(part) else 0
        where = f"set {param} to another source" if param else "check the URL"
        return (f"could not download {url} ({why}): check the network, {where}, or place the file "
                f"at {dest} by hand; {size} bytes kept in {part}, run again to resume")

    cap = _cap(size, pin_size, ((pins or {}).get(name) or {}).get("file", "the pin file"))
    total = _download(url, part, retries=retries, timeout=timeout, progress=progress,
                      unreachable=unreachable, cap=cap)
    size = os.path.getsize(part)
    if pin_size is not None and size != pin_size:
        os.remove(part)
        where = pins[name].get("file", "the pin file")
        raise IntegrityError(f"{dest}: {size} bytes but {where} pins {pin_size} for {name}: "
                             "run again to download it again, or correct the pin")
    try:
        got = verify(part, name=dest, expect=expect)
    except IntegrityError:
        os.remove(part)  # a wrong file must not be resumed
        raise
    if not expect:
        _learnable(url, dest, part, name, total, complete)
        if lock_path is not None:
            record_lock(name, url, got["sha256"], size, lock_path)
    os.replace(part, dest)
    return got


def _learnable(url, dest, part, name, total, complete) -> None:
    """Refuse to trust a file with no known hash unless its transfer is known complete."""
    if total is None and complete is None:
        raise IncompleteDownload(
            f"{dest}: download from {url} could not be verified complete (no Content-Length and "
            f"no known sha256); pin its sha256 under {name!r} in a pin file, then run again "
            f"to resume from {part}")
    why = _check_complete(complete, part, name) if complete is not None else None
    if why:
        os.remove(part)  # the length said whole (or said nothing): resuming cannot mend it
        raise IncompleteDownload(f"{dest}: download from {url} could not be verified complete "
                                 f"({why}); run again to download it again")


def _accept_existing(url, dest, name, expect, pin_size, complete, lock_path) -> dict:
    """A dest already in place: check it against what is known, or learn it if provably whole."""
    if pin_size is not None and os.path.getsize(dest) != pin_size:
        raise IntegrityError(f"{dest}: {os.path.getsize(dest)} bytes, pinned {pin_size}: "
                             "delete it and download again")
    if expect:
        return verify(dest, expect=expect)
    if complete is None:
        raise IncompleteDownload(f"{dest} exists but its sha256 is not known: delete it to "
                                 f"download again, or pin its sha256 under {name!r} in a pin file")
    why = _check_complete(complete, dest, name)
    if why:
        raise IncompleteDownload(f"{dest} is incomplete ({why}): delete it and download again")
    got = _hashes(dest)
    if lock_path is not None:
        record_lock(name, url, got["sha256"], os.path.getsize(dest), lock_path)
    return got


# ---------------------------------------------------------------- archives

def archive_complete(path, max_bytes=None) -> None:
    """Raise BadArchive unless the archive reads to its end: for zip every member's CRC;
    for tar every header and the end-of-archive block (tarfile alone stops quietly at a
    cut that falls on a header boundary). Members past the unpacking cap (see extract)
    stop it before they are decompressed."""
    budget = _Budget(path, max_bytes)
    try:
        if _is_zip(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    budget.take(info.file_size, info.filename)
                bad = zf.testzip()
            if bad is not None:
                raise BadArchive(f"{path}: member {_show(bad)} is corrupt")
            return
        with tarfile.open(path, "r:*") as tf:
            for m in tf:  # decompresses to the end: a cut stream raises EOFError here
                budget.take(m.size, m.name)
            # the header read at tf.offset must have been a whole block (the zero block)
            if tf.fileobj.tell() < tf.offset + tarfile.BLOCKSIZE:
                raise BadArchive(f"{path}: ends without the end-of-archive block (truncated)")
            while tf.fileobj.read(1 << 20):  # the rest must decompress cleanly too
                pass
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as e:
        raise BadArchive(f"{path}: unreadable archive ({_one_line(e)})") from None


class _Budget:
    """What an archive may still unpack to: max_bytes, or MAX_RATIO x its size (at least
    MIN_UNPACKED). Every member costs its size plus MEMBER_COST, taken before it is written."""

    def __init__(self, archive, max_bytes=None):
        self.archive = archive
        if max_bytes is None:
            max_bytes = max(MAX_RATIO * os.path.getsize(archive), MIN_UNPACKED)
            self.why = f"{MAX_RATIO}x the archive's size, at least {MIN_UNPACKED >> 20} MiB"
        else:
            self.why = "the limit its caller set"
        self.cap, self.used = max_bytes, 0

    def take(self, size, name) -> None:
        self.used += size + MEMBER_COST
        if self.used > self.cap:
            raise UnsafeArchive(
                f"{self.archive}: members up to {_show(name)} unpack to more than {self.cap:,} "
                f"bytes ({self.why}): refused as a decompression bomb, nothing extracted; "
                "delete it and download again")


def _is_zip(path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def _parts(name, archive) -> list:
    """A member name -> its path components, refusing absolute names and `..`."""
    if "\0" in name:
        raise UnsafeArchive(f"{archive}: member {_show(name)} has a NUL byte in its name")
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise UnsafeArchive(f"{archive}: member {_show(name)} has an absolute name")
    parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{archive}: member {_show(name)} has a '..' component")
    return parts


class _Tree:
    """The files and folders written so far into `root`, refusing collisions and any path
    whose real location is not the one its name gives inside root."""

    def __init__(self, root, archive, budget):
        self.root, self.archive, self.budget = os.path.realpath(root), archive, budget
        self.kinds = {(): "dir"}
        # lengths in bytes, checked before any call: the OS would only say ENAMETOOLONG
        self.path_max = os.pathconf(self.root, "PC_PATH_MAX")
        self.name_max = os.pathconf(self.root, "PC_NAME_MAX")

    def _path(self, name, parts) -> str:
        path = os.path.join(self.root, *parts)
        longest = max((len(os.fsencode(p)) for p in parts), default=0)
        if longest > self.name_max or len(os.fsencode(path)) >= self.path_max:
            raise UnsafeArchive(f"{self.archive}: member {_show(name)} has a name too long to "
                                f"extract here ({len(name):,} characters; limits {self.name_max} "
                                f"a component, {self.path_max} a path)")
        return path

    def _claim(self, name, parts, kind):
        for i in range(1, len(parts)):
            if self.kinds.setdefault(tuple(parts[:i]), "dir") != "dir":
                raise UnsafeArchive(f"{self.archive}: member {_show(name)} sits under a file of "
                                    "the same name")
        have = self.kinds.get(tuple(parts))
        if have is not None and (kind == "file" or have == "file"):
            raise UnsafeArchive(f"{self.archive}: member {_show(name)} appears twice (name collision)")
        self.kinds[tuple(parts)] = kind

    def _real(self, path, name):
        # path is built from root's real path and checked names: any link on the way
        # (none should exist, we never make one) would show as a difference here
        if os.path.realpath(path) != path:
            raise UnsafeArchive(f"{self.archive}: member {_show(name)} resolves outside the target folder")

    def folder(self, name, parts, charge=True):
        path = self._path(name, parts)
        if charge:
            self.budget.take(0, name)
        self._claim(name, parts, "dir")
        os.makedirs(path, mode=0o755, exist_ok=True)
        self._real(path, name)

    def file(self, name, parts, src, size, executable=False):
        if not parts:
            raise UnsafeArchive(f"{self.archive}: file member {_show(name)} has no name")
        path = self._path(name, parts)
        self.budget.take(size, name)  # from the header, before a byte is written
        self._claim(name, parts, "file")
        if len(parts) > 1:
            self.folder(name, parts[:-1], charge=False)
        self._real(path, name)
        # O_EXCL: never reuse an existing entry; O_NOFOLLOW: never write through a link
        flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0))
        try:
            fd = os.open(path, flags, 0o755 if executable else 0o644)
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                raise UnsafeArchive(f"{self.archive}: member {_show(name)} has a name too long") from None
            raise
        with os.fdopen(fd, "wb") as out:
            left = size
            while block := src.read(min(1 << 20, left + 1)):
                left -= len(block)
                if left < 0:  # the readers stop at the header's size; never trust that blindly
                    raise UnsafeArchive(f"{self.archive}: member {_show(name)} holds more than "
                                        f"its header's {size:,} bytes")
                out.write(block)


def _tar_kind(m) -> str:
    if m.issym() or m.islnk():
        return "a link"
    if m.ischr() or m.isblk():
        return "a device"
    if m.isfifo():
        return "a fifo"
    return f"of unsupported type {m.type!r}"


def _extract_tar(archive, tree):
    with tarfile.open(archive, "r:*") as tf:
        for m in tf:  # in archive order: compressed streams only ever read forward
            parts = _parts(m.name, archive)
            if m.isdir():
                if parts:
                    tree.folder(m.name, parts)
            elif m.isreg():
                with tf.extractfile(m) as src:
                    tree.file(m.name, parts, src, m.size, executable=bool(m.mode & 0o111))
            else:
                raise UnsafeArchive(f"{archive}: member {_show(m.name)} is {_tar_kind(m)}; only "
                                    "regular files and folders are extracted")


def _extract_zip(archive, tree):
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = _parts(info.filename, archive)
            ftype = stat.S_IFMT(info.external_attr >> 16)
            if ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
                what = {stat.S_IFLNK: "a link", stat.S_IFIFO: "a fifo", stat.S_IFCHR: "a device",
                        stat.S_IFBLK: "a device"}.get(ftype, "of unsupported type")
                raise UnsafeArchive(f"{archive}: member {_show(info.filename)} is {what}; only "
                                    "regular files and folders are extracted")
            if info.flag_bits & 0x1:
                raise BadArchive(f"{archive}: member {_show(info.filename)} is encrypted")
            if info.is_dir() or ftype == stat.S_IFDIR:
                if parts:
                    tree.folder(info.filename, parts)
            else:
                with zf.open(info) as src:
                    tree.file(info.filename, parts, src, info.file_size,
                              executable=bool((info.external_attr >> 16) & 0o111))


def extract(archive, dest, max_bytes=None) -> str:
    """Extract a .tar[.gz|.bz2|.xz] or .zip into dest atomically: regular files and folders
    only, into a fresh folder beside dest that replaces dest whole when every member is in.
    max_bytes: what the members may unpack to (default: see _Budget)."""
    archive, dest = str(archive), os.path.abspath(dest)
    is_zip = _is_zip(archive)
    if not is_zip and not tarfile.is_tarfile(archive):
        raise BadArchive(f"{archive}: not a tar or zip archive (delete it and download again)")
    with atomic_dir(dest) as tmp:
        tree = _Tree(tmp, archive, _Budget(archive, max_bytes))
        try:
            (_extract_zip if is_zip else _extract_tar)(archive, tree)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as e:
            raise BadArchive(f"{archive}: unreadable archive ({_one_line(e)}); delete it and "
                             "download again") from None
    return dest
