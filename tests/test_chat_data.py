"""Chat data (`cordee data prepare --chat`): token ids equal transformers' apply_chat_template, the
loss mask is exactly the assistant's tokens (two template styles, a tokenizer trained here with
the templates' special tokens), packing keeps conversations whole, the masked loss's gradient at 2
ranks x accumulation 2 equals the single-rank mean, a tiny run learns, and bad inputs exit 2."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cordee.errors import InputError
from cordee.train.chat import ChatTemplate
from cordee.train.chatdata import PAD, START, TARGET, ChatSource
from cordee.train.chatprep import prepare_chat
from cordee.train.data import open_source, require_samples
from cordee.train.order import IGNORE_INDEX, masked_batch, rank_batch, step_indices

CORDEE = str(Path(sys.executable).with_name("cordee"))

LLAMA = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"
    "\n\n{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim }}<|eot_id|>"
    "{% endgeneration %}{% else %}{{ message['content'] | trim }}<|eot_id|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}\n{% else %}"
    "{{ message['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
END = {"llama": "<|eot_id|>", "chatml": "<|im_end|>"}
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
SPECIAL += ["<|im_start|>", "<|im_end|>", "<pad>"]
CORPUS = ["The cat sat on the mat.", "What is two plus two? Two plus two is four.", "système, café, naïve"]
CORPUS += ["user assistant system", "What is 3 plus 4? 3 plus 4 is 7. And twice? Twice is 14. Add."]

CONVERSATION = [
    {"role": "system", "content": "You help."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Two plus two is four."},
    {"role": "user", "content": "Thanks! <|eot_id|> <|im_end|>"},  # special tokens in user text
    {"role": "assistant", "content": " Hello, café <|im_end|> naïve! \n"},
]


def model_dir(path: Path, template: str, *, as_file: bool = False, named: bool = False) -> Path:
    """A tokenizer directory as transformers saves one: a byte-level BPE trained here (vocabulary
    420, below the tiny model's 512) with the special tokens, and the template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(CORPUS * 20, trainer)
    tok.save(str(path / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
              "eos_token": "<|end_of_text|>", "pad_token": "<pad>"}  # fmt: skip
    if as_file:
        (path / "chat_template.jinja").write_text(template)
    elif named:
        config["chat_template"] = [
            {"name": "tool_use", "template": "x"},
            {"name": "default", "template": template},
        ]
    else:
        config["chat_template"] = template
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"llama": model_dir(root / "llama", LLAMA), "chatml": model_dir(root / "chatml", CHATML)}


@pytest.mark.parametrize("style", ["llama", "chatml"])
def test_ids_are_transformers_and_only_the_assistants_tokens_count(dirs, style):
    from transformers import AutoTokenizer

    encoded = ChatTemplate(str(dirs[style])).encode(CONVERSATION, "x:1")
    hf = AutoTokenizer.from_pretrained(str(dirs[style]))
    ref = hf.apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert encoded.ids == list(ref["input_ids"])
    # the template's {% generation %} marks give transformers' own assistant mask
    assert [int(c) for c in encoded.counts] == list(ref["assistant_masks"])
    # and by hand: the counted runs are each answer and its end marker, nothing of the headers
    runs, current = [], []
    for token, counts in zip(encoded.ids, encoded.counts, strict=True):
        if counts:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    answers = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    if style == "llama":
        answers = [a.strip() for a in answers]  # the template trims
    assert [hf.decode(r) for r in runs] == [a + END[style] for a in answers]
    assert all(r[-1] == hf.convert_tokens_to_ids(END[style]) for r in runs)  # the model learns to stop
    assert hf.convert_tokens_to_ids("<|begin_of_text|>") not in [t for r in runs for t in r]


def test_template_file_and_named_templates(tmp_path, dirs):
    from transformers import AutoTokenizer

    expected = ChatTemplate(str(dirs["chatml"])).encode(CONVERSATION, "x:1")
    for kw in ({"as_file": True}, {"named": True}):
        d = model_dir(tmp_path / str(kw), CHATML, **kw)
        assert ChatTemplate(str(d)).encode(CONVERSATION, "x:1") == expected
        hf = AutoTokenizer.from_pretrained(str(d))
        assert (
            list(hf.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"])
            == expected.ids
        )


def conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """Learnable: the answer repeats the question's numbers in a fixed pattern."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(0, 10, 2))
        turns = [{"role": "user", "content": f"What is {a} plus {b}?"},
                 {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]  # fmt: skip
        if rng.random() < 0.3:
            turns = [*turns, {"role": "user", "content": "And twice?"},
                     {"role": "assistant", "content": f"Twice is {2 * (a + b)}."}]  # fmt: skip
        out.append(turns)
    return out


def write_jsonl(path: Path, convs) -> Path:
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    return path


@pytest.mark.parametrize("packing", ["pack", "pad"])
def test_rows_hold_whole_conversations(tmp_path, dirs, packing):
    convs = conversations(60)
    template = ChatTemplate(str(dirs["llama"]))
    encoded = [template.encode(c, "x") for c in convs]
    seq_len = 63
    longest = max(len(e.ids) for e in encoded)
    assert 20 < longest <= seq_len + 1
    too_long = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the cat sat " * 30}]
    src = write_jsonl(tmp_path / "c.jsonl", [*convs[:30], too_long, *convs[30:]])
    out = tmp_path / "out"
    index = prepare_chat([str(src)], str(out), model_dir=str(dirs["llama"]), seq_len=seq_len, packing=packing,
                         shard_tokens=5 * (seq_len + 1))  # fmt: skip
    assert index["dropped_too_long"] == 1 and index["conversations"] == 60
    assert len(index["shards"]) == -(-index["rows"] // 5) > 1
    source = open_source(SimpleNamespace(path=str(out), seed=0), 512)
    assert isinstance(source, ChatSource) and source.num_samples(seq_len) == index["rows"]
    found = []
    for i in range(index["rows"]):
        tokens, flags = source.row(i)
        assert tokens.shape == flags.shape == (seq_len + 1,) and flags[0] & START
        starts = [*np.flatnonzero(flags & START), len(tokens)]
        for a, b in zip(starts, starts[1:], strict=False):
            body = b if not (flags[a:b] & PAD).any() else a + int(np.argmax(flags[a:b] & PAD))
            found.append((tokens[a:body].tolist(), ((flags[a:body] & TARGET) != 0).tolist()))
            assert (tokens[body:b] == template.pad_id).all() and (flags[body:b] == PAD).all()
        if packing == "pad":
            assert len(starts) == 2
    expected = [(e.ids, e.counts) for e in encoded]
    assert sorted(found) == sorted(expected)  # each conversation exactly once, whole
    assert index["tokens"] == sum(len(e.ids) for e in encoded)
    assert index["target_tokens"] == sum(sum(e.counts) for e in encoded)
    if packing == "pack":  # rows are fuller than one conversation each
        assert index["rows"] < 60 / 1.5


def test_masked_batches_follow_the_pure_order_with_the_mask(tmp_path, dirs):
    src = write_jsonl(tmp_path / "c.jsonl", conversations(40, seed=1))
    out = tmp_path / "out"
    prepare_chat([str(src)], str(out), model_dir=str(dirs["chatml"]), seq_len=47)
    source = open_source(SimpleNamespace(path=str(out), seed=0), 512)
    n = source.num_samples(47)
    for step in (0, 3):
        whole = masked_batch(source, 5, step, 4, 47, 0, 1)
        inputs, _ = rank_batch(source, 5, step, 4, 47, 0, 1)  # the same rows as pre-training's order
        assert np.array_equal(whole.inputs, inputs)
        halves = [masked_batch(source, 5, step, 4, 47, r, 2) for r in (0, 1)]
        for name in ("inputs", "targets", "positions", "segments"):
            assert np.array_equal(np.concatenate([getattr(h, name) for h in halves]), getattr(whole, name))
        assert whole.counted == sum(h.counted for h in halves) == int((whole.targets != IGNORE_INDEX).sum())
        for row, i in enumerate(step_indices(5, step, 4, n)):
            tokens, flags = source.row(i)
            counted = (flags[1:] & TARGET) != 0
            assert np.array_equal(whole.targets[row].numpy(), np.where(counted, tokens[1:], IGNORE_INDEX))
            seg, pos = whole.segments[row].numpy(), whole.positions[row].numpy()
            for t in range(47):  # positions restart at each conversation; a segment is one conversation
                new = bool(flags[t] & START) or (bool(flags[t] & PAD) and not (t and flags[t - 1] & PAD))
                assert (pos[t] == 0) == (new or t == 0)
                assert t == 0 or (
                    seg[t] == seg[t - 1] + 1 if new else seg[t] == seg[t - 1] and pos[t] == pos[t - 1] + 1
                )
    with pytest.raises(InputError, match=r"chat rows of seq_len 47 .*the config's seq_len is 64"):
        require_samples(source, 64)


# --- the masked loss across ranks -------------------------------------------------------------


PACKED = ["seq_len=127", "model.max_seq_len=128"]  # rows of 3 or more conversations


def _grad_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")  # fmt: skip
    import torch

    from cordee.train import parallel
    from cordee.train.configload import load_config
    from cordee.train.loop import Trainer
    from cordee.train.signals import StopRequest

    torch.set_num_threads(1)
    cfg = load_config("tiny", [f"data.path={data}", *PACKED, "global_batch=8", "micro_batch=2"])
    d = parallel.init(parallel.read_ranks(os.environ), "cpu", 60)
    source = open_source(cfg.data, cfg.model.vocab_size)
    trainer = Trainer(cfg, d, source, StopRequest(), lambda line: None)
    assert trainer.accum == 2
    loss, counted = trainer._masked_backward(masked_batch(source, cfg.data.seed, 0, 8, 127, rank, world))
    torch.distributed.all_reduce(loss)
    grads = {}
    for name, p in trainer.model.named_parameters():
        g = p.grad
        grads[name] = g.full_tensor() if hasattr(g, "full_tensor") else g
    if rank == 0:
        torch.save({"grads": grads, "loss": loss.item() / world, "counted": counted}, out)
    del trainer
    parallel.shutdown()


def test_masked_gradient_at_two_ranks_and_accumulation_equals_the_full_batch_mean(tmp_path, dirs):
    import torch
    import torch.nn.functional as F

    from cordee.train.configload import load_config
    from cordee.train.model import Transformer

    src = write_jsonl(tmp_path / "c.jsonl", conversations(40, seed=2))
    data = tmp_path / "out"
    prepare_chat([str(src)], str(data), model_dir=str(dirs["llama"]), seq_len=127)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = torch.multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_grad_worker, args=(r, 2, port, str(data), str(tmp_path / "g.pt"))) for r in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    got = torch.load(tmp_path / "g.pt")

    cfg = load_config("tiny", [f"data.path={data}", *PACKED, "global_batch=8"])
    model = Transformer(cfg.model)
    model.init_weights(cfg.seed)
    batch = masked_batch(open_source(cfg.data, 512), cfg.data.seed, 0, 8, 127, 0, 1)
    assert (batch.segments.max(dim=1).values >= 3).all()
    logits = model(batch.inputs, positions=batch.positions, segments=batch.segments)
    loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE_INDEX)
    loss.backward()
    assert got["counted"] == batch.counted and got["loss"] == pytest.approx(loss.item(), abs=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(got["grads"][name], p.grad, atol=1e-5, rtol=1e-4), name
    # the data's segments matter: without them (plain causal attention over the packed rows) the
    # gradient differs, so the comparison above does test them
    model.zero_grad()
    F.cross_entropy(model(batch.inputs).flatten(0, 1), batch.targets.flatten(), ignore_index=-100).backward()
    assert not torch.allclose(
        got["grads"]["layers.0.attention.wq.weight"], model.layers[0].attention.wq.weight.grad
    )


# --- end to end and bad inputs through the CLI -------------------------------------------------


def cordee(*args, timeout=120, env=None):
    return subprocess.run([CORDEE, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_a_tiny_run_lowers_the_masked_loss(tmp_path, dirs):
    src = write_jsonl(tmp_path / "c.jsonl", conversations(200, seed=3))
    r = cordee("data", "prepare", "--chat", "--model-dir", str(dirs["llama"]), "--seq-len", "64", str(src),
               "-o", str(tmp_path / "d"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["kind"] == "chat" and summary["conversations"] == 200 and summary["packing"] == "pack"
    metrics = tmp_path / "m.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")} | {"OMP_NUM_THREADS": "1"}
    r = cordee("train", "--config", "tiny", f"data.path={tmp_path / 'd'}", "steps=30", "lr=3e-3",
               f"metrics_file={metrics}", "log_interval=1000", env=env, timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert len(rows) == 30 and all(0 < row["loss_tokens"] < 8 * 64 for row in rows)
    assert rows[0]["loss"] > 4.5  # chance level over 512 ids is 6.2
    assert np.mean([row["loss"] for row in rows[-5:]]) < 0.5 * rows[0]["loss"]


BAD_CONVERSATIONS = {
    "no assistant": ([{"role": "user", "content": "hi"}], "c.jsonl':2: no assistant message"),
    "no content": ([{"role": "user"}, {"role": "assistant", "content": "x"}], "c.jsonl':2: message 1 needs"),
    "unknown role": ([{"role": "robot", "content": "x"}], "c.jsonl':2: message 1: role 'robot', allowed"),
    "not a list": ("hello", "c.jsonl':2: 'messages' must be a non-empty list"),
    "content list": ([{"role": "assistant", "content": [1]}], "c.jsonl':2: message 1: content is list"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONVERSATIONS))
def test_bad_conversations_exit_2_naming_the_line(tmp_path, dirs, case):
    messages, expected = BAD_CONVERSATIONS[case]
    src = tmp_path / "c.jsonl"
    src.write_text(
        json.dumps({"messages": conversations(1)[0]}) + "\n" + json.dumps({"messages": messages}) + "\n"
    )
    r = cordee("data", "prepare", "--chat", "--model-dir", str(dirs["chatml"]), "--seq-len", "64", str(src),
               "-o", str(tmp_path / "o"))  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and expected in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_bad_model_dirs_templates_and_options_exit_2(tmp_path, dirs):
    src = write_jsonl(tmp_path / "c.jsonl", conversations(3))
    raising = model_dir(tmp_path / "raising", "{{ raise_exception('system message first') }}")
    broken = model_dir(tmp_path / "broken", "{% for m in messages %}")
    no_template = model_dir(tmp_path / "none", CHATML)
    config = json.loads((no_template / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (no_template / "tokenizer_config.json").write_text(json.dumps(config))
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["data", "prepare", str(src), "-o", str(tmp_path / "o")]

    def chat(directory, seq_len="64"):
        return ["--chat", "--model-dir", str(directory), "--seq-len", seq_len]

    cases = [
        (chat(raising), "c.jsonl':1: the chat template failed: system message first"),
        (chat(broken), "chat template does not compile"),
        (chat(no_template), "no chat template"),
        (chat(empty), "empty': no tokenizer.json"),
        (chat(src), "not a directory"),
        (["--chat", "--model-dir", str(dirs["llama"])], "--chat needs --seq-len"),
        ([*chat(dirs["llama"]), "--tokenizer", "t.json"], "--tokenizer does not apply"),
        (["--seq-len", "64"], "--seq-len needs --chat"),
        (chat(dirs["llama"], "8"), "every conversation is longer than seq_len + 1 = 9"),
        (chat(dirs["llama"], "99999999999"), "--seq-len"),
    ]
    for extra, expected in cases:
        r = cordee(*base, *extra)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and expected in r.stderr, (extra, r.stderr)
    assert not (tmp_path / "o").exists()
    # a chat data set of another seq_len than the config's: exit 2 before anything starts
    r = cordee(*base, "--chat", "--model-dir", str(dirs["llama"]), "--seq-len", "32", "--quiet")
    assert r.returncode == 0, r.stderr
    r = cordee("train", "--config", "tiny", f"data.path={tmp_path / 'o'}", "--dry-run")
    assert r.returncode == 2 and "chat rows of seq_len 32" in r.stderr and "seq_len is 64" in r.stderr, (
        r.stderr
    )


def test_damaged_chat_data_sets_are_one_line_naming_the_file(tmp_path, dirs):
    src = write_jsonl(tmp_path / "c.jsonl", conversations(30))
    good = tmp_path / "good"
    index = prepare_chat([str(src)], str(good), model_dir=str(dirs["llama"]), seq_len=63, shard_tokens=640)
    shard = good / "chat-00000.chat"

    def fails(expected, vocab=512):
        with pytest.raises(InputError, match=expected) as e:
            open_source(SimpleNamespace(path=str(d), seed=0), vocab)
        assert "\n" not in str(e.value)

    d = tmp_path / "d"
    for change, expected in [
        (lambda: (d / "chat-00000.chat").write_bytes(shard.read_bytes()[:-1]), "chat-00000.chat': truncated"),
        (
            lambda: (d / "chat-00000.chat").write_bytes(b"GGUF" + shard.read_bytes()[4:]),
            "not a cordee chat shard",
        ),
        (lambda: (d / "chat-00000.chat").unlink(), r"index.json' does not list the \*.chat shards"),
        (lambda: (d / "index.json").write_text("[1"), "index.json': not a cordee.chat/1 index"),
        (lambda: (d / "index.json").write_text('{"schema": "x"}'), "not a cordee.chat/1 index"),
    ]:
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(good, d)
        change()
        fails(expected)
    shutil.rmtree(d)
    shutil.copytree(good, d)
    vocab = index["vocab_size"]
    fails(rf"vocabulary \({vocab}\) is larger than model.vocab_size {vocab - 1}", vocab=vocab - 1)
