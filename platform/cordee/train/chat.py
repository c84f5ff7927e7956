"""A conversation -> token ids and a loss mask, with a model directory's own tokenizer and chat
template, as `transformers` renders them, without `transformers` at run time.

The template (tokenizer_config.json's `chat_template`, a string or a list of named templates, or a
chat_template.jinja file beside it, which takes precedence as in transformers 5) is rendered by a
sandboxed Jinja2 environment set up as transformers/utils/chat_template_utils.py sets up its own:
trim_blocks, lstrip_blocks, the loopcontrols extension, `raise_exception`, `strftime_now`, a
`tojson` filter that does not escape HTML, and the named special tokens (bos_token, eos_token, ...)
as variables. The text is tokenized by the `tokenizers` library from tokenizer.json without
special tokens added (the template writes its own BOS): the ids equal `apply_chat_template(...,
tokenize=True)`'s.

The mask: assistant message i spans the characters between the render of messages[:i] with the
generation prompt and the render of messages[:i + 1]; a token counts when it starts in such a span.
The generation prompt (the assistant header) does not count, the turn's end marker does (the
model must learn to stop); whitespace the template writes after the end marker does not.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from cordee.errors import InputError, shown
from cordee.fileio import read_bounded, read_json

ROLES = ("system", "user", "assistant", "tool")
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
TEMPLATE_FILE = "chat_template.jinja"
# A template is code from the model directory: one render of one conversation must end, and small.
# Real templates take milliseconds and write about the conversation's length.
MAX_RENDER_CHARS = 64 << 20
MAX_POWER_BITS = 1 << 16
RENDER_SECONDS = 5.0


class RenderLimit(Exception):
    """A chat template ran past RENDER_SECONDS or wrote more than MAX_RENDER_CHARS."""


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    counts: list[bool]  # counts[t]: token t is the assistant's (a loss target)


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: str) -> dict:
    data = read_json(path, "JSON file")
    if not isinstance(data, dict):
        raise InputError(f"{shown(path)}: not a JSON object")
    return data


def _pick_template(model_dir: str, config: dict, config_path: str) -> tuple[str, str]:
    """(template text, where it came from)."""
    jinja = os.path.join(model_dir, TEMPLATE_FILE)
    if os.path.lexists(jinja):
        try:
            return read_bounded(jinja).decode("utf-8"), jinja
        except UnicodeDecodeError:
            raise InputError(f"{shown(jinja)}: not UTF-8 text") from None
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]: the "default" one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if "default" not in named:
            raise InputError(
                f"{shown(config_path)}: chat_template has no 'default' among {sorted(map(str, named))[:5]}"
            )
        template = named["default"]
    if template is None:
        raise InputError(
            f"model directory {shown(model_dir)}: no chat template (tokenizer_config.json chat_template "
            f"or {TEMPLATE_FILE})"
        )
    if not isinstance(template, str):
        raise InputError(f"{shown(config_path)}: chat_template is {type(template).__name__}, not a string")
    return template, config_path


def _environment():
    """The sandboxed Jinja2 environment transformers renders chat templates with."""
    from datetime import datetime

    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask markers): the body."""

        tags = {"generation"}

        def parse(self, parser):
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    class Bounded(ImmutableSandboxedEnvironment):
        """Refuses the one-operator bombs: 'a' * 10**10, 9 ** 10**9, x + x doubled (the sandbox
        bounds range())."""

        intercepted_binops = frozenset({"*", "**", "+"})

        def call_binop(self, context, operator, left, right):
            ints = all(isinstance(v, int) for v in (left, right))
            if operator == "**" and ints and right > 0 and abs(left).bit_length() * right > MAX_POWER_BITS:
                raise RenderLimit(f"{left} ** {right} is too large")
            if (
                operator == "+"
                and isinstance(left, str | list | tuple)
                and isinstance(right, str | list | tuple)
            ):
                if len(left) + len(right) > MAX_RENDER_CHARS:  # x + x, doubled in a loop
                    raise RenderLimit(f"a sequence of {len(left) + len(right)} items is too long")
            if operator == "*":
                seq, times = (left, right) if isinstance(right, int) else (right, left)
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if len(seq) * times > MAX_RENDER_CHARS:
                        raise RenderLimit(f"a sequence of {len(seq)} repeated {times} times is too long")
            return super().call_binop(context, operator, left, right)

    env = Bounded(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = dict
    return env


@contextmanager
def _deadline(seconds: float):
    """RenderLimit in the main thread once `seconds` have passed (SIGALRM: the template's loops are
    Python code, which a signal handler interrupts); no bound elsewhere but the text's length."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise RenderLimit(f"it ran longer than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _bounded_join(pieces) -> str:
    out, size = [], 0
    for piece in pieces:
        size += len(piece)
        if size > MAX_RENDER_CHARS:
            raise RenderLimit(f"it wrote more than {MAX_RENDER_CHARS} characters")
        out.append(piece)
    return "".join(out)


class ChatTemplate:
    """A model directory's tokenizer and chat template. InputError (one line naming the file) when
    tokenizer.json, tokenizer_config.json or the template is missing or unreadable."""

    def __init__(self, model_dir: str) -> None:
        import hashlib

        from cordee.train.tokenizer import load_tokenizer_json

        if not os.path.isdir(model_dir):
            raise InputError(f"--model-dir {shown(model_dir)}: not a directory")
        self.model_dir = os.path.abspath(model_dir)
        tok_path = os.path.join(model_dir, "tokenizer.json")
        if not os.path.lexists(tok_path):
            raise InputError(f"model directory {shown(model_dir)}: no tokenizer.json")
        config_path = os.path.join(model_dir, "tokenizer_config.json")
        config = _read_json(config_path) if os.path.lexists(config_path) else {}
        self.template_text, self.template_source = _pick_template(model_dir, config, config_path)
        self.tokenizer, vocab, raw = load_tokenizer_json(tok_path, "--chat")
        self.vocab_size = max(vocab.values()) + 1
        self.tokenizer_sha256 = hashlib.sha256(raw).hexdigest()
        self.template_sha256 = hashlib.sha256(self.template_text.encode()).hexdigest()
        self.special = {n: t for n in SPECIAL_NAMES if (t := _token_text(config.get(n))) is not None}
        ids = {n: self.tokenizer.token_to_id(t) for n, t in self.special.items()}
        self.pad_id = ids.get("pad_token") if ids.get("pad_token") is not None else ids.get("eos_token")
        if self.pad_id is None:
            raise InputError(
                f"{shown(config_path)}: neither pad_token nor eos_token is a token of tokenizer.json "
                "(padding needs one)"
            )
        import jinja2

        try:
            self.template = _environment().from_string(self.template_text)
        except jinja2.TemplateError as e:
            raise InputError(f"{shown(self.template_source)}: chat template does not compile: {e}") from None

    def render(self, messages: list[dict], generation_prompt: bool, where: str) -> str:
        try:
            with _deadline(RENDER_SECONDS):
                return _bounded_join(self.template.generate(
                    messages=messages, tools=None, documents=None, add_generation_prompt=generation_prompt,
                    **self.special,
                ))  # fmt: skip
        except RenderLimit as e:
            raise InputError(f"{where}: the chat template was stopped: {e}") from None
        except Exception as e:  # the template's raise_exception, an undefined name, a sandbox refusal
            text = " ".join(str(e).split())[:120] or type(e).__name__
            raise InputError(f"{where}: the chat template failed: {text}") from None

    def encode(self, messages, where: str) -> Encoded:
        """The ids and mask of one conversation (`where`: file:line, for messages)."""
        check_messages(messages, where)
        full = self.render(messages, False, where)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self.render(messages[:i], True, where)
            upto = self.render(messages[: i + 1], False, where)
            if not (full.startswith(upto) and upto.startswith(prompt)):
                raise InputError(
                    f"{where}: the chat template does not render message {i + 1} as a continuation of "
                    "the ones before it, so the assistant's tokens cannot be told apart"
                )
            start = len(prompt)
            end = len(upto.rstrip()) if upto[start:].strip() else len(upto)
            spans.append((start, end))
        from cordee.train.tokenizer import _first_line, _library_error, _no_panic_message

        try:  # e.g. a lone surrogate from a JSON "\ud800" escape
            with _no_panic_message():
                encoding = self.tokenizer.encode(full, add_special_tokens=False)
        except BaseException as e:
            if not _library_error(e):
                raise
            raise InputError(f"{where}: the tokenizer failed: {_first_line(e)}") from None
        counts = [any(a <= s < b for a, b in spans) for s, _ in encoding.offsets]
        if not any(counts):
            raise InputError(f"{where}: the chat template renders no assistant text")
        return Encoded(list(encoding.ids), counts)

    def describe(self) -> dict:
        return {
            "kind": "chat",
            "model_dir": self.model_dir,
            "tokenizer_sha256": self.tokenizer_sha256,
            "template": self.template_source,
            "template_sha256": self.template_sha256,
            "pad": self.pad_id,
        }


def check_messages(messages, where: str) -> None:
    """A list of {"role": one of ROLES, "content": str} with at least one assistant message."""
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{where}: 'messages' must be a non-empty list")
    for n, m in enumerate(messages, 1):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"{where}: message {n} needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise InputError(
                f"{where}: message {n}: role {shown(str(m['role']))}, allowed {', '.join(ROLES)}"
            )
        if not isinstance(m["content"], str):
            raise InputError(f"{where}: message {n}: content is {type(m['content']).__name__}, not a string")
    if not any(m["role"] == "assistant" for m in messages):
        raise InputError(f"{where}: no assistant message (nothing to learn from)")
