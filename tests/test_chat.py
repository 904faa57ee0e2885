"""``pipe.chat`` / ``Conversation`` / ``blip2 chat`` on tiny random-weight HF BLIP-2 folders with real
tokenizers: a Llama whose tokenizer has a chat template, OPT and a FlanT5-style T5 without one
("Question: ... Answer:" form). Checked: streamed pieces join to the reply; the second turn's
prompt holds the first reply and the vision encoder runs once per conversation; a one-turn chat
without a template is ``answer`` with the same decoding; stop strings cut; options pass through;
the terminal chat driven through a real pseudo-terminal.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoTokenizer, T5Config

import tiny_models as T
from blip2core import load_pipeline
from blip2core.errors import InputError
from blip2core.inference.chat import Conversation
from blip2core.inference.chat_text import ReplyText, held_back, question_answer_prompt
from blip2core.testing import save_hf_blip2_folder, save_tiny_t5_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: ChatML, as SmolLM2-Instruct's, without its default system message
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_T5 = dict(
    d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
    relative_attention_max_distance=20, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)
USER = [{"role": "user", "content": "what is it?"}]
GREEDY = dict(max_new_tokens=12)


def save_chat_llama(folder):
    """The tiny HF Llama folder, its tokenizer given a chat template."""
    T.save_generation_folder(folder, "llama", seed=1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return T.saved_once(tmp_path_factory.getbasetemp() / "chat-llama", save_chat_llama)


@pytest.fixture(scope="module")
def llama(llama_folder):
    return load_pipeline(llama_folder)


@pytest.fixture(scope="module")
def opt(hf_opt_folder):
    return load_pipeline(hf_opt_folder)


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat-t5")
    save_tiny_t5_tokenizer(folder)
    vocab = len(AutoTokenizer.from_pretrained(folder))
    model = save_hf_blip2_folder(folder, T5Config(vocab_size=vocab + 1, **TINY_T5).to_dict(), image_token_index=vocab)
    # an own, larger output embedding (FlanT5's is untied): random replies that do not end at once
    torch.manual_seed(0)
    model.language_model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.language_model.lm_head.weight))
    model.save_pretrained(folder)
    return load_pipeline(folder)


@pytest.fixture(scope="module")
def pipes(llama, opt, t5):
    return {"llama": llama, "opt": opt, "t5": t5}


class Recorder:
    """Counts the vision encoder's forward passes and keeps the longest ids the LLM embedded (the prompt)."""

    def __init__(self, pipe):
        self.vision_calls = 0
        self.prompts: list[list[int]] = []
        embedding = pipe.llm.model.get_input_embeddings()
        self.handles = [
            pipe.vision.register_forward_hook(lambda *_: self._count()),
            embedding.register_forward_pre_hook(lambda _, args: self.prompts.append(args[0][0].tolist())),
        ]

    def _count(self):
        self.vision_calls += 1

    def longest_prompt(self) -> list[int]:
        return max(self.prompts, key=len)

    def close(self):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("name", ["llama", "opt", "t5"])
def test_streamed_pieces_join_to_the_reply(pipes, photos, name):
    pipe = pipes[name]
    reply = pipe.chat(photos[0], USER, **GREEDY)
    pieces = list(pipe.chat(photos[0], USER, stream=True, **GREEDY))
    assert reply and len(pieces) > 1
    assert "".join(pieces) == reply


def test_a_second_turn_reads_the_first_and_the_image_is_encoded_once(llama, photos):
    recorder = Recorder(llama)
    try:
        conversation = Conversation(llama, photos[1], **GREEDY)
        first = conversation.send("what is it?")
        second = "".join(conversation.send("and the colour?", stream=True))
        assert recorder.vision_calls == 1
        prompt = llama.llm.tokenizer.decode(recorder.longest_prompt())
    finally:
        recorder.close()
    assert prompt == llama.llm.tokenizer.apply_chat_template(
        [*USER, {"role": "assistant", "content": first}, {"role": "user", "content": "and the colour?"}],
        add_generation_prompt=True, tokenize=False,
    )
    assert conversation.messages[-1] == {"role": "assistant", "content": second}
    conversation.reset()
    assert conversation.messages == []
    conversation.set_image(photos[2])
    assert conversation.send("what is it?") == llama.chat(photos[2], USER, **GREEDY)


def test_the_image_prefix_cache_gives_the_uncached_reply(llama, photos):
    conversation = Conversation(llama, photos[0], **GREEDY)
    conversation.send("what is it?")
    assert conversation.image.prefix_cache is not None
    cached = conversation.send("is it red?")
    messages = [*conversation.messages[:-1]]
    assert llama.chat(photos[0], messages, prefix_cache=False, **GREEDY) == cached


@pytest.mark.parametrize("name", ["opt", "t5"])
def test_without_a_template_one_turn_is_answer_and_turns_use_question_answer(pipes, photos, name):
    pipe = pipes[name]
    options = dict(num_beams=3, max_new_tokens=8, repetition_penalty=1.3, length_penalty=0.5)
    assert pipe.chat(photos[0], USER, **options) == pipe.answer(photos[0], "what is it?", **options)[0]
    recorder = Recorder(pipe)
    try:
        conversation = Conversation(pipe, photos[0], system="Be brief.", max_new_tokens=6)
        first = conversation.send("what is it?")
        conversation.send("where?")
        prompt = recorder.longest_prompt()
    finally:
        recorder.close()
    answer = first if first.endswith((".", "!", "?")) else f"{first}."
    expected = f"Be brief. Question: what is it? Answer: {answer} Question: where? Answer:"
    assert prompt == pipe.llm.tokenizer(expected).input_ids


def test_question_answer_form():
    messages = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "which city is this?"},
        {"role": "assistant", "content": "singapore"},
        {"role": "user", "content": "why?"},
        {"role": "assistant", "content": "it has a statue of a merlion!"},
        {"role": "user", "content": "what is it?"},
    ]
    assert question_answer_prompt(messages) == (
        "Answer in one word. Question: which city is this? Answer: singapore. "
        "Question: why? Answer: it has a statue of a merlion! Question: what is it? Answer:"
    )


def test_an_instruction_aware_bridge_reads_each_question_from_one_vision_pass(hf_opt_folder, photos):
    from test_instruction_aware import MINILM

    from blip2core.loading import resolve_spec

    spec = resolve_spec(hf_opt_folder).model_dump()
    spec["bridge"]["options"].update(with_text_heads=True, instruction_aware=True, tokenizer=MINILM,
                                     vocab_size=30522, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    spec["weights"] = []
    torch.manual_seed(0)
    pipe = load_pipeline(spec)
    recorder = Recorder(pipe)
    try:
        conversation = Conversation(pipe, photos[0], max_new_tokens=6)
        replies = [conversation.send(q) for q in ("what is it?", "is it red?")]
        assert recorder.vision_calls == 1
    finally:
        recorder.close()
    assert replies[0] == pipe.answer(photos[0], "what is it?", num_beams=1, max_new_tokens=6)[0]


@pytest.mark.parametrize("name", ["llama", "t5"])
def test_a_stop_string_cuts_the_reply(pipes, photos, name):
    pipe = pipes[name]
    reply = pipe.chat(photos[0], USER, max_new_tokens=20)
    # a two-character stop string, from the middle of the places where one occurs for the first time
    places = [i for i in range(1, len(reply) - 1) if reply.find(reply[i:i + 2]) == i and reply[:i].strip()]
    cut = places[len(places) // 2]
    stop = reply[cut:cut + 2]
    expected = reply[:cut].strip()
    assert pipe.chat(photos[0], USER, max_new_tokens=20, stop=stop) == expected
    assert "".join(pipe.chat(photos[0], USER, max_new_tokens=20, stop=[stop, "\x00never"], stream=True)) == expected


def test_decoding_options_pass_through(llama, photos):
    sampled = dict(do_sample=True, seed=7, top_p=0.8, temperature=1.5, max_new_tokens=12)
    once = llama.chat(photos[0], USER, **sampled)
    streamed = "".join(llama.chat(photos[0], USER, stream=True, **sampled))
    assert once == llama.chat(photos[0], USER, **sampled) == streamed
    assert once != llama.chat(photos[0], USER, **GREEDY)
    short = llama.chat(photos[0], USER, max_new_tokens=2)
    assert llama.chat(photos[0], USER, **GREEDY).startswith(short)
    assert len(llama.llm.tokenizer(short, add_special_tokens=False).input_ids) <= 2
    # beams, length and repetition penalties: see test_without_a_template_one_turn_is_answer_...


def test_closing_a_stream_early_keeps_what_was_read_and_frees_the_pipeline(llama, photos):
    conversation = Conversation(llama, photos[0], max_new_tokens=40)
    pieces = conversation.send("what is it?", stream=True)
    first = next(pieces)
    pieces.close()
    assert conversation.messages[-1] == {"role": "assistant", "content": first}
    assert llama.chat(photos[0], USER, **GREEDY)  # the worker let go of the pipeline's lock


@pytest.mark.parametrize(
    ("messages", "options", "message"),
    [
        (USER, {"stream": True, "num_beams": 2}, "streaming needs num_beams=1"),
        (USER, {"num_return_sequences": 2, "num_beams": 2}, "one reply"),
        (USER, {"stop": ""}, "must not be empty"),
        ("what is it?", {}, "messages must be a list"),
        ([], {}, "messages is empty"),
        ([{"role": "robot", "content": "hi"}], {}, "message 0: role must be one of"),
        ([*USER, {"role": "assistant", "content": "a cat"}], {}, "the last message must be the user's"),
        ([{"role": "user", "content": "  "}], {}, "message 0: the user's message is empty"),
    ],
)
def test_bad_input_is_one_clear_error(llama, photos, messages, options, message):
    with pytest.raises(InputError, match=message):
        llama.chat(photos[0], messages, **options)


def test_reply_text_sends_only_text_no_later_token_changes(llama):
    tokenizer = llama.llm.tokenizer
    ids = tokenizer(" a photo of a cat  ST sitting STOP on a mat", add_special_tokens=False).input_ids
    text = ReplyText(tokenizer, ["STOP"])
    pieces = []
    for token in ids:
        pieces.append(text.add([token]))
        if text.stopped:
            break
    pieces.append(text.finish())
    assert "".join(pieces) == "a photo of a cat  ST sitting"
    assert not any(piece.endswith(" ") for piece in pieces) and sum(map(bool, pieces)) > 2
    assert held_back("a cat ST", ["STOP"]) == 2 and held_back("a cat S", ["STOP", "ST"]) == 1
    assert held_back("a cat", ["STOP"]) == 0


# ------------------------------------------------------------------------------ the terminal chat
class Terminal:
    """``blip2 chat`` in a child process on a real pseudo-terminal (stdin, stdout, stderr)."""

    def __init__(self, *args: str):
        self.master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "BLIP2_DEBUG"}
        env.update(OMP_NUM_THREADS="1", TERM="dumb", PYTHONFAULTHANDLER="1")
        self.process = subprocess.Popen([sys.executable, "-m", "blip2core.cli", "chat", *args], stdin=slave,
                                        stdout=slave, stderr=slave, env=env, close_fds=True, start_new_session=True)
        os.close(slave)
        self.buffer = b""

    def read_until(self, marker: bytes, timeout: float = 120) -> str:
        """Everything written up to and including ``marker`` (the terminal's \\r\\n read as \\n)."""
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} within {timeout}s; got {self.buffer!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"the chat ended before {marker!r}; got {self.buffer!r}"
                self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return (head + marker).decode("utf-8", "replace").replace("\r\n", "\n")

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        """The exit code, once the child ended (its output read meanwhile); killed after 60 s."""
        deadline = time.monotonic() + 60
        try:
            while self.process.poll() is None and time.monotonic() < deadline:
                ready, _, _ = select.select([self.master], [], [], 0.5)
                if ready:
                    try:
                        self.buffer += os.read(self.master, 4096)
                    except OSError:
                        pass
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
                time.sleep(3)
                try:
                    self.buffer += os.read(self.master, 65536)
                except OSError:
                    pass
                self.process.kill()
                pytest.fail(f"blip2 chat did not end: {self.buffer.decode('utf-8', 'replace')[-4000:]}")
            return self.process.returncode
        finally:
            os.close(self.master)


def test_blip2_chat_in_a_terminal(llama_folder, llama, photos):
    terminal = Terminal(str(photos[0]), "--model", str(llama_folder), "--max-new-tokens", "8")
    try:
        banner = terminal.read_until(b"Ctrl-D quits\n> ".replace(b"\n", b"\r\n"))
        assert "/image PATH" in banner and "/reset" in banner
        terminal.send("what is it?\n")
        first = terminal.read_until(b"\n> ")
        expected = llama.chat(photos[0], USER, max_new_tokens=8)
        assert first.split("what is it?\n", 1)[1].removesuffix("\n> ").strip("\n") == expected.replace("\r\n", "\n")
        terminal.send("/reset\n")
        assert "(history cleared)" in terminal.read_until(b"\n> ")
        terminal.send("/image /no/such/picture.png\n")
        assert "error: " in terminal.read_until(b"\n> ")
        terminal.send(f"/image {photos[3]}\n")
        assert f"(now about {photos[3]})" in terminal.read_until(b"\n> ")
        terminal.send("what is it?\n")
        reply = terminal.read_until(b"\n> ").split("what is it?\n", 1)[1].removesuffix("\n> ").strip("\n")
        assert reply == llama.chat(photos[3], USER, max_new_tokens=8).replace("\r\n", "\n")
        terminal.send("\x04")  # Ctrl-D
    finally:
        code = terminal.close()
    assert code == 0


def test_blip2_chat_with_an_unreadable_image_is_one_error_line(llama_folder, tmp_path, capsys):
    from blip2core.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["chat", str(tmp_path / "missing.png"), "--model", str(llama_folder)])
    assert exited.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "missing.png" in errors[0]
