"""Registers the core's ``standard`` preprocessor through the same hook every plugin uses."""

from __future__ import annotations

from blip2core.hookspecs import hookimpl


@hookimpl
def register_preprocessors(register):
    from blip2core.preprocess.options import PreprocessOptions
    from blip2core.preprocess.preprocessor import build_standard_preprocessor

    register(
        "standard",
        build_standard_preprocessor,
        options=PreprocessOptions,
        description="Follows the encoder's PreprocessConfig; exact (Pillow, = transformers / LAVIS) "
        "or fast (torchvision.io + torch resize)",
    )
