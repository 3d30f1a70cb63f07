# Sourced by reproduce.sh and test.sh: create .venv (if missing), activate it, install
# the pinned requirements.
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -r requirements.txt
