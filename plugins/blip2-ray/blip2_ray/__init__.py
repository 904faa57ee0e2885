"""blip2-ray: batch inference over large image sets on Ray Data (see docs/scaling.md)."""
