"""Verified, resumable downloads and safe archive extraction (urllib + hashlib + tqdm).

Integrity: a publisher checksum when there is one; otherwise the sha256 recorded on first
download in a committed lock file (checksums.json) and checked on every later download.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile

from ..errors import UserError
from .storage import write_json

LOCK_FILE = os.path.join(os.path.dirname(__file__), "checksums.json")


class DownloadError(UserError):
    pass


class IntegrityError(DownloadError):
    pass


class UnsafeArchive(UserError):
    pass


def _hashes(path, algos=("sha256", "md5")) -> dict:
    hs = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            for h in hs.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hs.items()}


def read_lock(lock_path=LOCK_FILE) -> dict:
    if not os.path.exists(lock_path):
        return {}
    with open(lock_path) as f:
        return json.load(f)


def record_lock(name, url, sha256, size, lock_path=LOCK_FILE) -> None:
    lock = read_lock(lock_path)
    lock[name] = {"url": url, "sha256": sha256, "bytes": size}
    write_json(lock_path, lock)


def _transfer(url, part, timeout, progress) -> int | None:
    """One HTTP request appending to `part` from its current size; returns the total size."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url, headers={"User-Agent": "zforcing-repro/1.0"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part is complete
            return have
        raise
    with resp:
        if have and resp.status != 206:  # server ignored the range: start again
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        from tqdm import tqdm
        with open(part, "ab" if have else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, disable=not progress,
                desc=os.path.basename(part)[:-5], leave=False) as bar:
            while block := resp.read(1 << 16):
                f.write(block)
                bar.update(len(block))
    return total


def fetch(url, dest, *, sha256=None, md5=None, lock_name=None, lock_path=LOCK_FILE,
          retries=3, timeout=60, progress=True) -> dict:
    """Download url to dest (resuming dest.part), verify, then move into place atomically.

    sha256/md5: the publisher's checksum. Without one, the sha256 under `lock_name` in the
    lock file is checked, or recorded there on first download. Returns the file's hashes.
    """
    lock_name = lock_name or os.path.basename(dest)
    if sha256 is None and md5 is None:
        sha256 = read_lock(lock_path).get(lock_name, {}).get("sha256")
    if os.path.exists(dest):
        got = verify(dest, sha256=sha256, md5=md5)
        if sha256 is None:  # placed by hand or lock reset: record it now
            record_lock(lock_name, url, got["sha256"], os.path.getsize(dest), lock_path)
        return got
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = f"{dest}.part"
    total, err = None, None
    for _ in range(retries + 1):
        try:
            total = _transfer(url, part, timeout, progress)
            err = None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
            err = e
            if isinstance(e, urllib.error.HTTPError) and e.code < 500:
                break  # a 404 does not get better by asking again
            continue
        size = os.path.getsize(part)
        if total is None or size >= total:
            break
        err = DownloadError(f"truncated: connection closed at {size} of {total} bytes")
    size = os.path.getsize(part) if os.path.exists(part) else 0
    if err is not None:
        raise DownloadError(f"{dest}: download from {url} failed ({err}); {size} bytes kept in "
                            f"{part}, run again to resume (expected sha256 {sha256 or 'not yet recorded'})")
    if total is not None and size != total:
        raise IntegrityError(f"{dest}: truncated, {size} of {total} bytes "
                             f"(expected sha256 {sha256 or 'not yet recorded'}); run again to resume")
    try:
        got = verify(part, sha256=sha256, md5=md5, name=dest)
    except IntegrityError:
        os.remove(part)  # a wrong file must not be resumed
        raise
    if sha256 is None:
        record_lock(lock_name, url, got["sha256"], size, lock_path)
    os.replace(part, dest)
    return got


def verify(path, *, sha256=None, md5=None, name=None) -> dict:
    """Check a file against the expected hashes; the error names the file and the hash."""
    name = name or path
    got = _hashes(path)
    if sha256 and got["sha256"] != sha256:
        raise IntegrityError(f"{name}: sha256 {got['sha256']} does not match expected {sha256} "
                             f"(truncated or corrupt file: delete it and download again)")
    if md5 and got["md5"] != md5:
        raise IntegrityError(f"{name}: md5 {got['md5']} does not match the publisher's {md5} "
                             f"(truncated or corrupt file: delete it and download again)")
    return got


def _inside(root: str, target: str) -> bool:
    root = os.path.realpath(root)
    return os.path.commonpath([root, os.path.realpath(target)]) == root


def _check_name(root, name, archive):
    if not name or os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
        raise UnsafeArchive(f"{archive}: member {name!r} would be written outside the target folder")
    if not _inside(root, os.path.join(root, name)):
        raise UnsafeArchive(f"{archive}: member {name!r} escapes the target folder")


def _check_tar(root, tf, archive):
    for m in tf.getmembers():
        _check_name(root, m.name, archive)
        if m.issym():
            target = os.path.join(root, os.path.dirname(m.name), m.linkname)
            if os.path.isabs(m.linkname) or not _inside(root, target):
                raise UnsafeArchive(f"{archive}: link {m.name!r} -> {m.linkname!r} points outside the target folder")
        elif m.islnk():
            if os.path.isabs(m.linkname) or not _inside(root, os.path.join(root, m.linkname)):
                raise UnsafeArchive(f"{archive}: hard link {m.name!r} -> {m.linkname!r} points outside the target folder")
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchive(f"{archive}: member {m.name!r} is a device or fifo")


def extract(archive, dest) -> str:
    """Extract a .tar[.gz|.bz2|.xz] or .zip into dest atomically, refusing unsafe members."""
    archive = str(archive)
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".extract.", dir=parent)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_name(tmp, info.filename, archive)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise UnsafeArchive(f"{archive}: member {info.filename!r} is a link")
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                _check_tar(tmp, tf, archive)
                kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(tmp, **kw)
        else:
            raise UnsafeArchive(f"{archive}: not a tar or zip archive")
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)
