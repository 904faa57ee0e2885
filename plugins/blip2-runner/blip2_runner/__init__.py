"""blip2-runner: ``blip2 train`` / ``blip2 eval``, BLIP-2's losses, tasks and metrics.

Modules: ``config`` (RUN.yaml), ``data`` (data sets, images, example order), ``losses``,
``tasks``, ``metrics``, ``trainer``, ``checkpoint``, ``tracking`` (metrics.jsonl, plots),
``feature_cache``, ``distributed``, ``schedule``, ``cli``, ``plugin`` (the hooks).
Importing this package is cheap; heavy modules load when used.
"""

__version__ = "0.1.0"
