"""blip2core plugin: OPT causal language models (BLIP-2's OPT-2.7B / 6.7B) from transformers."""
