"""Settings shared by every test in the repository (core and plugins)."""

import os

# Model hubs are unreachable here: every test must work from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
