"""Settings shared by every test in the repository (core and plugins)."""

import os

# Model hubs are unreachable here: every test must work from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _threads_per_xdist_worker() -> int | None:
    """Under pytest-xdist (``make test``): the CPUs shared out between the workers, so that two
    workers on 2 cores do not run 4 busy-waiting OpenMP threads; None when not under xdist."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not os.environ.get("PYTEST_XDIST_WORKER") or not workers:
        return None
    return max(1, (os.cpu_count() or 1) // int(workers))


_THREADS = _threads_per_xdist_worker()
if _THREADS is not None:
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))  # subprocesses the tests start, too


def pytest_configure(config):
    if _THREADS is not None:
        import torch

        torch.set_num_threads(_THREADS)
