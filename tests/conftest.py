"""Shared test set-up: one CPU thread per test process keeps the suite predictable on 2-core machines."""

import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
# tests import small helpers (toy_task.py) from this folder
sys.path.insert(0, str(Path(__file__).parent))
