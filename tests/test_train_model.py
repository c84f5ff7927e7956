"""The reference transformer on the CPU: parameter count against the module, shapes, causality,
grouped-query attention against its multi-head equivalent, rotary relative positions, a traceable
forward, deterministic initialization (also after FSDP2 sharding across real processes) and a
learnable toy task."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from cordee.train.config import ModelConfig  # noqa: E402
from cordee.train.configload import load_config, shipped_configs  # noqa: E402
from cordee.train.layers import apply_rotary, rotary_frequencies  # noqa: E402
from cordee.train.model import Transformer, cross_entropy, flops_per_token, num_params  # noqa: E402

README = Path(__file__).resolve().parents[1] / "platform" / "cordee" / "train" / "README.md"
SMALL = ModelConfig(vocab_size=97, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=80, max_seq_len=32)


def model(cfg: ModelConfig = SMALL, seed: int = 0) -> Transformer:
    m = Transformer(cfg)
    m.init_weights(seed)
    return m


@pytest.mark.parametrize("kv", [1, 2, 3, 6])
def test_param_count_matches_the_module(kv):
    cfg = dataclasses.replace(SMALL, n_kv_heads=kv)
    m = Transformer(cfg)
    assert num_params(cfg) == sum(p.numel() for p in m.parameters())
    embeddings = m.tok_embeddings.weight.numel() + m.output.weight.numel()
    assert num_params(cfg, embeddings=False) == num_params(cfg) - embeddings


def test_shipped_shapes_have_their_published_sizes():
    # the 1.26B single-GPU reference model and Meta Llama 3 8B (8.03B parameters)
    assert round(num_params(load_config("1b").model) / 1e9, 2) == 1.26
    assert round(num_params(load_config("8b").model) / 1e9, 2) == 8.03


def test_readme_table_of_shipped_configs_matches_the_code():
    text = README.read_text()
    for name in shipped_configs():
        if name.startswith("finetune-"):  # the shape comes from the Hugging Face model given
            continue
        cfg = load_config(name)
        m = cfg.model
        row = f"| `{name}` | {m.dim} | {m.n_layers} | {m.n_heads}/{m.n_kv_heads} | {m.ffn_dim}"
        gflops = flops_per_token(m, cfg.seq_len) / 1e9
        row += f" | {m.vocab_size} | {cfg.seq_len} | {num_params(m):,} | {gflops:.3g} |"
        assert row in text, f"README row of {name} should be: {row}"


def test_flops_per_token_grows_with_sequence_by_the_attention_term():
    cfg = load_config("1b").model
    extra = flops_per_token(cfg, 4096) - flops_per_token(cfg, 2048)
    assert extra == 12 * cfg.n_layers * cfg.dim * 2048
    assert flops_per_token(cfg, 1) > 6 * num_params(cfg)


def test_forward_shapes_and_finite_logits():
    tokens = torch.randint(0, SMALL.vocab_size, (3, 17))
    logits = model()(tokens)
    assert logits.shape == (3, 17, SMALL.vocab_size)
    assert torch.isfinite(logits).all()


def test_future_tokens_do_not_change_earlier_logits():
    m = model()
    tokens = torch.randint(0, SMALL.vocab_size, (2, 20))
    changed = tokens.clone()
    changed[:, 12:] = (changed[:, 12:] + 1) % SMALL.vocab_size
    a, b = m(tokens), m(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12], rtol=0, atol=1e-6)
    assert (a[:, 12:] - b[:, 12:]).abs().max() > 1e-3


def test_grouped_query_attention_equals_multi_head_with_shared_key_value_heads():
    gqa = model(SMALL)
    mha = Transformer(dataclasses.replace(SMALL, n_kv_heads=SMALL.n_heads))
    head, repeat = SMALL.dim // SMALL.n_heads, SMALL.n_heads // SMALL.n_kv_heads
    state = gqa.state_dict()
    for key in list(state):
        if key.endswith(("attention.wk.weight", "attention.wv.weight")):  # [kv * head, dim]
            per_head = state[key].view(SMALL.n_kv_heads, head, SMALL.dim)
            state[key] = per_head.repeat_interleave(repeat, dim=0).reshape(-1, SMALL.dim)
    mha.load_state_dict(state)
    tokens = torch.randint(0, SMALL.vocab_size, (2, 16))
    torch.testing.assert_close(gqa(tokens), mha(tokens), rtol=1e-5, atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    inv_freq = rotary_frequencies(8, 10000.0)
    q, k = torch.randn(8), torch.randn(8)

    def rotated(vector: torch.Tensor, pos: int) -> torch.Tensor:
        seq = torch.zeros(1, pos + 1, 1, 8)
        seq[0, pos, 0] = vector
        angles = torch.outer(torch.arange(pos + 1, dtype=torch.float32), inv_freq)
        return apply_rotary(seq, angles.cos(), angles.sin())[0, pos, 0]

    def score(pos_q: int, pos_k: int) -> float:
        return float(rotated(q, pos_q) @ rotated(k, pos_k))

    assert score(5, 2) == pytest.approx(score(40, 37), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-5)  # position 0 is not rotated
    assert rotated(q, 9).norm() == pytest.approx(float(q.norm()), rel=1e-5)  # a rotation


def test_init_is_deterministic_and_depends_on_the_seed():
    a, b, c = model(seed=7), model(seed=7), model(seed=8)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        if not name.endswith("norm.weight"):
            assert not torch.equal(pa, pc), name


def test_init_after_meta_materialization_equals_a_plain_init():
    with torch.device("meta"):
        meta = Transformer(SMALL)
    meta.to_empty(device="cpu")
    meta.init_weights(3)
    plain = model(seed=3)
    for (name, pa), pb in zip(meta.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    tokens = torch.randint(0, SMALL.vocab_size, (1, 9))
    assert torch.equal(meta(tokens), plain(tokens))  # the rotary buffers were rebuilt too


def test_forward_traces_as_one_graph():
    # no data-dependent Python control flow: dynamo captures the whole forward without a break
    m = model()
    compiled = torch.compile(m, backend="eager", fullgraph=True, dynamic=False)
    tokens = torch.randint(0, SMALL.vocab_size, (2, 11))
    torch.testing.assert_close(compiled(tokens), m(tokens))


SHARDED_INIT = textwrap.dedent(
    """
    import os, sys, torch, torch.distributed as dist
    from cordee.train.config import ModelConfig
    from cordee.train.model import Transformer
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        from torch.distributed._composable.fsdp import fully_shard
    from torch.distributed.device_mesh import init_device_mesh

    def say(stage):  # a failure's output then tells how far each rank got
        print(f"rank {os.environ['RANK']}: {stage}", file=sys.stderr, flush=True)

    dist.init_process_group("gloo")
    cfg = ModelConfig(vocab_size=97, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=80, max_seq_len=32)
    m = Transformer(cfg)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for block in m.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(m, mesh=mesh)
    say("sharded")
    m.init_weights(11)
    say("initialized")
    full = {k: v.full_tensor() for k, v in m.state_dict().items()}
    if dist.get_rank() == 0:
        torch.save(full, sys.argv[1])
    dist.barrier()  # leave together: a rank that tears gloo down while its peer works may abort
    dist.destroy_process_group()
    say("done")
    # Skip interpreter finalization: gloo work objects that still hold tensors can abort the
    # process there (SIGABRT, "terminate called without an active exception"; pytorch PR 179291)
    os._exit(0)
    """
)


def test_sharded_init_gives_the_weights_of_a_single_process_init(tmp_path):
    script = tmp_path / "sharded_init.py"
    script.write_text(SHARDED_INIT)
    out = tmp_path / "full.pt"
    cordee = str(Path(sys.executable).with_name("cordee"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "TORCHELASTIC"))}
    env |= {"GLOO_SOCKET_IFNAME": "lo"}
    r = subprocess.run(
        [
            cordee,
            "launch",
            "--profile",
            "none",
            "--nproc-per-node",
            "2",
            "--",
            sys.executable,
            str(script),
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    sharded = torch.load(out)
    plain = model(seed=11).state_dict()
    assert sharded.keys() == plain.keys()
    for name, value in plain.items():
        assert torch.equal(sharded[name], value), name


def test_loss_falls_on_a_learnable_task():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=32, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=16)
    m = model(cfg, seed=1)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    starts = torch.randint(0, cfg.vocab_size, (16, 1))
    seqs = (starts + 3 * torch.arange(17)) % cfg.vocab_size  # each token = previous + 3
    losses = []
    for _ in range(40):
        loss = cross_entropy(m(seqs[:, :-1]), seqs[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.5  # about log(32) = 3.47 at the start
    assert losses[-1] < 0.3 * losses[0]


VARIANTS = {
    "apertus": dataclasses.replace(SMALL, arch="apertus"),
    "tied": dataclasses.replace(SMALL, tie_embeddings=True),
    "head_dim": dataclasses.replace(SMALL, head_dim=12),
    "llama3-rope": dataclasses.replace(SMALL, rope_scaling="llama3", rope_original_max_len=16),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_param_count_and_flops_match_the_module_of_each_variant(variant):
    cfg = VARIANTS[variant]
    m = model(cfg)
    assert num_params(cfg) == sum(p.numel() for p in m.parameters())
    matmul_width = cfg.n_heads * cfg.head_size  # the attention term follows the heads, not dim
    untied = num_params(cfg) + (cfg.vocab_size * cfg.dim if cfg.tie_embeddings else 0)
    assert flops_per_token(cfg, 32) == 6 * untied + 12 * cfg.n_layers * matmul_width * 32
    tokens = torch.randint(0, cfg.vocab_size, (2, 13))
    assert m(tokens).shape == (2, 13, cfg.vocab_size)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reset_buffers_completes_a_model_materialized_from_meta(variant):
    cfg = VARIANTS[variant]
    with torch.device("meta"):
        meta = Transformer(cfg)
    meta.to_empty(device="cpu")
    meta.reset_buffers()
    plain = model(cfg)
    meta.load_state_dict(plain.state_dict())
    for (name, a), b in zip(meta.named_buffers(), plain.buffers(), strict=True):
        assert torch.equal(a, b), name
    tokens = torch.randint(0, cfg.vocab_size, (1, 9))
    assert torch.equal(meta(tokens), plain(tokens))


def test_one_segment_and_default_positions_equal_the_causal_path():
    m = model(VARIANTS["apertus"])
    tokens = torch.randint(0, SMALL.vocab_size, (2, 15))
    positions = torch.arange(15).expand(2, 15)
    same = m(tokens, positions=positions, segments=torch.zeros(2, 15, dtype=torch.int64))
    torch.testing.assert_close(same, m(tokens), rtol=0, atol=1e-5)


def test_segments_keep_attention_inside_each_sequence():
    m = model(VARIANTS["llama3-rope"])
    a, b = torch.randint(0, SMALL.vocab_size, (1, 6)), torch.randint(0, SMALL.vocab_size, (1, 10))
    packed = m(
        torch.cat([a, b], 1),
        positions=torch.cat([torch.arange(6), torch.arange(10)])[None],
        segments=torch.tensor([[3] * 6 + [7] * 10]),
    )
    torch.testing.assert_close(packed, torch.cat([m(a), m(b)], 1), rtol=0, atol=1e-5)


def test_apertus_forward_with_segments_traces_as_one_graph():
    m = model(VARIANTS["apertus"])
    compiled = torch.compile(m, backend="eager", fullgraph=True, dynamic=False)
    tokens = torch.randint(0, SMALL.vocab_size, (2, 11))
    positions, segments = torch.arange(11).expand(2, 11), torch.tensor([[0] * 5 + [1] * 6] * 2)
    torch.testing.assert_close(compiled(tokens, positions, segments), m(tokens, positions, segments))


def test_flex_attention_of_compiled_blocks_equals_the_boolean_mask():
    """The GPU path for packed rows (parallel.wrap_model turns it on with compile): the same logits
    as the dense boolean mask, and packed sequences still see only themselves."""
    pytest.importorskip("torch.nn.attention.flex_attention", reason="FlexAttention needs torch >= 2.5")
    m = model(VARIANTS["apertus"])
    a, b = torch.randint(0, SMALL.vocab_size, (2, 50)), torch.randint(0, SMALL.vocab_size, (2, 78))
    tokens = torch.cat([a, b], 1)
    positions = torch.cat([torch.arange(50), torch.arange(78)]).expand(2, 128)
    segments = torch.tensor([[0] * 50 + [1] * 78] * 2)
    with torch.no_grad():
        dense = m(tokens, positions, segments)
    for block in m.layers:
        block.compile()  # flex_attention is only fast, and only exact on CPU, when compiled
    m.flex_attention = True
    with torch.no_grad():  # FlexAttention has no backward on CPU; tests/gpu trains through it
        flex = m(tokens, positions, segments)
        torch.testing.assert_close(flex, dense, rtol=0, atol=1e-5)
        torch.testing.assert_close(flex[:, 50:], m(b), rtol=0, atol=1e-5)
