# Sourced by reproduce.sh and test.sh: create .venv if missing, activate it, and install
# the pinned requirements only when requirements.txt changed since the last install (its
# sha256 is kept in .venv/requirements.sha256). The project needs Python 3.11: set PYTHON
# to pick the interpreter that creates .venv (default python3).
_zf_py=.venv/bin/python
[ -e "$_zf_py" ] || _zf_py="${PYTHON:-python3}"
_zf_ver=$("$_zf_py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
if [ "$_zf_ver" != "3.11" ]; then
    if [ "$_zf_py" = .venv/bin/python ]; then
        echo "error: .venv has Python $_zf_ver, the project needs 3.11: remove .venv and rerun with PYTHON=python3.11" >&2
    else
        echo "error: $_zf_py is Python $_zf_ver, the project needs 3.11: rerun with PYTHON=python3.11 (or the path of one)" >&2
    fi
    return 1
fi
[ -e .venv/bin/python ] || "$_zf_py" -m venv .venv
. .venv/bin/activate
_zf_hash=$(python -c 'import hashlib; print(hashlib.sha256(open("requirements.txt", "rb").read()).hexdigest())')
if [ "$(cat .venv/requirements.sha256 2>/dev/null)" != "$_zf_hash" ]; then
    python -m pip install -q --upgrade pip
    python -m pip install -q -r requirements.txt
    echo "$_zf_hash" > .venv/requirements.sha256
fi
unset _zf_py _zf_ver _zf_hash
