"""blip2core plugin: Llama-family causal language models (Llama, Vicuna, SmolLM2) from transformers or GGUF."""
