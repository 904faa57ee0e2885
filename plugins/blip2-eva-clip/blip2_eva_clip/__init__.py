"""blip2core plugin: EVA ViT-g/14 as BLIP-2 uses it (``eva-vit``) and open_clip EVA towers (``open-clip-eva``).

Importing this package is cheap; torch, timm and open_clip load when a component is built.
"""
