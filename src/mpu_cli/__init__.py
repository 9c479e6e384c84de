"""mpu-cli: experiment runner for MPU, privacy-preserving LLM unlearning with multiple perturbed copies."""

import os

__version__ = "0.1.0"

# Tensors of 2 MiB and more on transparent huge pages (torch's own switch, read at its first allocation): the server
# and the client allocate and free tensor-sized temporaries one after another, and on 4 KiB pages the page faults
# of each cost more than the arithmetic on it (2-4x on an elementwise pass over a 1B-shape tensor, measured on this
# project's CPU). A user's own setting wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
