"""Helpers that vision-encoder plugins share: position-embedding resampling (``pos_embed``),
block-index resolution (``blocks``) and reading open_clip model configs (``open_clip_config``;
open_clip itself is imported only when those functions are called)."""
