"""Registers the core's ``standard`` preprocessor through the same hook every plugin uses.

Light on purpose (every ``blip2`` command runs it): torch, torchvision and Pillow are imported inside
the factory, when a preprocessor is built.
"""

from __future__ import annotations

from blip2core.hookspecs import hookimpl


def build_standard_preprocessor(options, *, preprocess_config):
    """``standard`` factory (``blip2core.preprocess.preprocessor``)."""
    from blip2core.preprocess.preprocessor import build_standard_preprocessor as build

    return build(options, preprocess_config=preprocess_config)


@hookimpl
def register_preprocessors(register):
    from blip2core.preprocess.options import PreprocessOptions

    register(
        "standard",
        build_standard_preprocessor,
        options=PreprocessOptions,
        description="Follows the encoder's PreprocessConfig; exact (Pillow, = transformers / LAVIS) "
        "or fast (torchvision.io + torch resize)",
    )
