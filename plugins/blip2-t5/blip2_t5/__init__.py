"""blip2core plugin: T5 / FlanT5 encoder-decoder language models (BLIP-2's FlanT5-XL / XXL) from transformers."""
