"""Compatibility layers for code written against other BLIP-2 libraries.

``blip2core.compat.lavis``: ``load_model_and_preprocess`` as in Salesforce LAVIS.
"""
