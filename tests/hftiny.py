"""Tiny Hugging Face model directories built by `transformers` itself (random weights), with a
small word-level tokenizer (the `tokenizers` library) and a Llama 3 style chat template, and small
chat sets: the inputs of the export and fine-tuning tests. transformers is a test-only dependency.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
WORDS = [f"w{i}" for i in range(40)] + ["user", "assistant", "system", "[UNK]"]
# Llama 3's template, shortened (no tools, no date): the header, two newlines, the text, <|eot_id|>
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
SHAPE = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 128}  # fmt: skip


def write_tokenizer(model_dir: Path) -> int:
    """tokenizer.json + tokenizer_config.json (with the chat template) in `model_dir`; the
    vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIAL)
    tok.save(str(model_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIAL[0], "eos_token": SPECIAL[4],
        "pad_token": SPECIAL[1], "unk_token": "[UNK]", "chat_template": TEMPLATE, "model_max_length": 128,
    }  # fmt: skip
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return len(vocab)


def build_model(arch: str = "llama", *, vocab_size: int = 64, seed: int = 0, tied: bool = False, **shape):
    """A transformers causal LM of the tiny shape, random weights, float32."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cls = {"llama": transformers.LlamaConfig, "apertus": transformers.ApertusConfig}[arch]
    if arch == "apertus":  # its default Llama 3.1 scaling, over a pre-training length that fits
        shape.setdefault("rope_parameters", {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 32})  # fmt: skip
    config = cls(**(SHAPE | shape), vocab_size=vocab_size, tie_word_embeddings=tied, bos_token_id=0,
                 eos_token_id=4, pad_token_id=1)  # fmt: skip
    return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def model_dir(path: Path, arch: str = "llama", *, seed: int = 0, tied: bool = False, **shape) -> Path:
    """A Hugging Face directory at `path`: config.json, model.safetensors, the tokenizer files."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(path)
    model = build_model(arch, vocab_size=vocab + 3, seed=seed, tied=tied, **shape)  # 3 unused rows
    model.save_pretrained(str(path))
    return path


def chat_jsonl(path: Path, conversations: int, *, seed: int = 0, length: tuple[int, int] = (3, 8)) -> Path:
    """Conversations with a learnable answer: the assistant repeats the user's words (`length`:
    the range of their number) reversed, from 8 distinct words (quick to learn)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(conversations):
            words = [f"w{rng.randrange(8)}" for _ in range(rng.randint(*length))]
            messages = [
                {"role": "system", "content": "w0 w1"},
                {"role": "user", "content": " ".join(words)},
                {"role": "assistant", "content": " ".join(reversed(words))},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def logits_of_hf(directory: Path, tokens):
    """Logits of the transformers model loaded from `directory` (float32, eval)."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(tokens).logits


def cordee_model(ckpt: Path):
    """cordee's own model (plain, CPU, fp32) with the weights of the checkpoint root `ckpt`'s
    latest step, loaded by DCP in this process."""
    from cordee.train.checkpoint import Checkpointer
    from cordee.train.config import ModelConfig
    from cordee.train.model import Transformer

    step_dir = ckpt / (ckpt / "latest").read_text().strip()
    extra = json.loads((step_dir / "cordee.json").read_text())["extra"]
    model = Transformer(ModelConfig(**extra["model"]))
    Checkpointer(str(ckpt), 1, async_save=False, rank=0, world_size=1).load_latest({"model": model})
    return model.eval()
