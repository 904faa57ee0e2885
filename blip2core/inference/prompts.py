"""Named caption styles and the VQA question template.

A style is a named instruction prompt for ``caption(style=...)``. The built-in ones can be
extended or overridden by a spec's ``styles`` field (``{name: prompt}``)::

    styles: {poetic: "Question: Describe this image as a poem. Answer:"}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: BLIP-2's own captioning: no instruction, the LLM continues from the image (and BOS).
BUILTIN_STYLES: dict[str, str] = {
    "short": "",
    "detailed": "Question: Describe this image in detail. Answer:",
}
DEFAULT_STYLE = "short"
#: BLIP-2's zero-shot VQA prompt for OPT (LAVIS / the paper)
DEFAULT_VQA_TEMPLATE = "Question: {} Answer:"


def available_styles(spec_styles: Mapping[str, str] | None = None) -> dict[str, str]:
    """The built-in styles, updated with the spec's (a spec may override a built-in name)."""
    return {**BUILTIN_STYLES, **dict(spec_styles or {})}


def caption_prompt(style: str | None, prompt: str | None, spec_styles: Mapping[str, str] | None = None) -> str:
    """The prompt a caption call uses: ``prompt`` when given, else the named ``style``'s
    (default ``"short"``). Raises ValueError naming the unknown style and the known ones, or for
    a prompt that is not valid Unicode."""
    if prompt is not None:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        check_unicode(prompt, "the prompt")
        return prompt
    styles = available_styles(spec_styles)
    name = DEFAULT_STYLE if style is None else style
    if name not in styles:
        raise ValueError(f"unknown caption style {name!r}; known styles: {', '.join(sorted(styles))}")
    return styles[name]


def format_questions(template: str, questions: Sequence[str]) -> list[str]:
    """Each question put into ``template`` at its ``{}``. Raises ValueError for a template
    without exactly one ``{}``, an empty (or all-whitespace) question or one that is not valid
    Unicode, and TypeError for a question that is not a string."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"the question template needs exactly one '{{}}' where the question goes, got {template!r}")
    out = []
    for i, question in enumerate(questions):
        if not isinstance(question, str):
            raise TypeError(f"question {i} must be a string, got {type(question).__name__}")
        if not question.strip():
            raise ValueError(f"question {i} is empty: there is nothing to answer")
        check_unicode(question, f"question {i}")
        out.append(template.replace("{}", question))
    return out


def check_unicode(text: str, what: str) -> None:
    """ValueError when ``text`` holds a lone surrogate (what Python makes of bytes that are not UTF-8
    in a command-line argument or a file read with ``errors="surrogateescape"``): no tokenizer takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} is not valid Unicode text (a lone surrogate {text[exc.start]!r} at position {exc.start}: "
            "bytes in another encoding than UTF-8?)"
        ) from None
