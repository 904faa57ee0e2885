"""blip2-serve: ``blip2 serve``, an HTTP API over one shared pipeline (see docs/serving.md)."""
