"""``mini``: a small, real, trained BLIP-2 that installs offline (see the plugin README)."""
