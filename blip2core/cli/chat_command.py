"""``blip2 chat IMAGE``: an interactive conversation about an image in the terminal.

Each line typed is a message; the reply is printed as it is generated. Lines starting with ``/``
are commands: ``/image PATH`` talks about another image from then on (the history stays),
``/reset`` clears the history, ``/help`` lists them. Ctrl-D (end of input) ends the chat with
exit code 0. A problem within the chat (an unreadable ``/image``, a conversation grown too long
for the model) is one ``error: ...`` line and the chat goes on; an unreadable IMAGE or model ends
it before it starts (exit code 1, ``blip2core.cli.failures``).
"""

from __future__ import annotations

import click

from blip2core.cli.inference_commands import load_model, loading_options, usage_errors

HELP = "commands: /image PATH (talk about another image), /reset (clear the history), /help; Ctrl-D quits"


@click.command("chat")
@click.argument("image")
@click.option("--system", default=None, help="A system message before the conversation.")
@click.option("--stop", "stops", multiple=True, metavar="TEXT", help="End a reply at TEXT (repeatable).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--sample", is_flag=True, help="Nucleus sampling instead of greedy decoding.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=0.9, show_default=True)
@click.option("--repetition-penalty", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed for --sample.")
@loading_options
def chat_command(image, system, stops, max_new_tokens, sample, temperature, top_p, repetition_penalty, seed,
                 spec, model, device, dtype, quantize) -> None:
    """Talk about IMAGE: type a message, read the reply as it is written. /help lists the commands."""
    from blip2core.inference.chat import Conversation

    options = dict(stop=list(stops) or None, max_new_tokens=max_new_tokens, do_sample=sample,
                   temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed)
    usage_errors(lambda: _check_options(options))
    pipe = load_model(spec, model, device, dtype, quantize)
    conversation = Conversation(pipe, image, system=system, **options)
    click.echo(f"chat about {image}; {HELP}", err=True)
    while True:
        try:
            line = input("> ")
        except EOFError:
            click.echo()
            return
        _handle(conversation, line.strip())


def _check_options(options: dict) -> None:
    from blip2core.inference.chat_text import check_stops
    from blip2core.inference.generation import GenerationSettings

    check_stops(options["stop"])
    GenerationSettings(num_beams=1, **{k: v for k, v in options.items() if k != "stop"})


def _handle(conversation, line: str) -> None:
    """One line typed: a command, or a message whose reply is streamed to stdout."""
    from blip2core.errors import Blip2Error

    if not line:
        return
    command, _, argument = line.partition(" ")
    try:
        if command == "/image":
            if not argument.strip():
                click.echo("error: /image needs a path: /image PATH", err=True)
                return
            conversation.set_image(argument.strip())
            click.echo(f"(now about {argument.strip()})", err=True)
        elif command == "/reset":
            conversation.reset()
            click.echo("(history cleared)", err=True)
        elif command == "/help":
            click.echo(HELP, err=True)
        elif command.startswith("/"):
            click.echo(f"error: unknown command {command}; {HELP}", err=True)
        else:
            for piece in conversation.send(line, stream=True):
                click.echo(piece, nl=False)
            click.echo()
    except (Blip2Error, OSError) as exc:  # the chat goes on; nothing of the failed turn is kept
        hint = " (/reset clears the history)" if conversation.messages else ""
        click.echo(f"error: {' '.join(str(exc).split())}{hint}", err=True)
