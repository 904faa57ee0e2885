"""blip2core plugin: CLIP ViT vision towers as token encoders, from open_clip (``clip-vit``) or
transformers (``hf-clip-vision``).

Importing this package is cheap; torch, open_clip and transformers load when a component is built.
"""
