"""The core's built-in bridges: ``qformer`` (BLIP-2) and ``mlp-projector`` (LLaVA style)."""
