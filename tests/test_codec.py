"""The semantic-ID codec: round trips, illegal codes, prefix masks, collisions, files."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from policies.codec import SemanticIdCodec

SIZES = (3, 4, 2)


@st.composite
def item_codes(draw, max_items: int = 40) -> torch.Tensor:
    """(N, 3) codes within SIZES, collisions allowed."""
    rows = draw(st.lists(
        st.tuples(*(st.integers(0, size - 1) for size in SIZES)), min_size=1, max_size=max_items
    ))
    return torch.tensor(rows, dtype=torch.long)


@settings(deadline=None, max_examples=60)
@given(codes=item_codes())
def test_every_item_round_trips(codes: torch.Tensor) -> None:
    codec = SemanticIdCodec(codes, SIZES)
    items = torch.arange(len(codes))
    assert torch.equal(codec.decode(codec.encode(items)), items)
    assert codec.is_legal(codec.encode(items)).all()
    assert torch.equal(codec.encode(items)[:, :3], codes)  # semantic levels kept as given


def test_illegal_codes_decode_to_minus_one() -> None:
    codec = SemanticIdCodec(torch.tensor([[0, 1, 1], [2, 3, 0]]), SIZES)
    slates = torch.tensor([
        [[0, 1, 1], [0, 1, 0], [2, 3, 0]],  # legal, unused code, legal
        [[3, 0, 0], [-1, 1, 1], [0, 1, 2]],  # each out of its codebook's range
    ])  # (B=2, S=3, L=3)
    assert codec.decode(slates).tolist() == [[0, -1, 1], [-1, -1, -1]]
    assert codec.is_legal(slates).tolist() == [[True, False, True], [False, False, False]]


def test_wrong_code_width_is_an_error() -> None:
    codec = SemanticIdCodec(torch.tensor([[0, 1, 1]]), SIZES)
    with pytest.raises(ValueError, match="3 levels"):
        codec.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"item_ids must lie in \[0, 1\)"):
        codec.encode(torch.tensor([1]))


def test_allowed_next_by_hand() -> None:
    codec = SemanticIdCodec(torch.tensor([[0, 1, 1], [0, 3, 0], [2, 3, 1]]), SIZES)
    assert codec.allowed_next(torch.zeros(2, 0, dtype=torch.long)).tolist() == [
        [True, False, True]
    ] * 2
    assert codec.allowed_next(torch.tensor([[0], [1], [2]])).tolist() == [
        [False, True, False, True], [False] * 4, [False, False, False, True],
    ]
    assert codec.allowed_next(torch.tensor([[0, 1], [2, 3], [0, 2], [7, 1]])).tolist() == [
        [False, True], [False, True], [False, False], [False, False],
    ]


@settings(deadline=None, max_examples=40)
@given(codes=item_codes(), seed=st.integers(0, 10_000))
def test_following_allowed_next_always_reaches_a_legal_code(codes, seed) -> None:
    codec = SemanticIdCodec(codes, SIZES)
    generator = torch.Generator().manual_seed(seed)
    prefix = torch.zeros(16, 0, dtype=torch.long)
    for _ in range(codec.num_levels):
        mask = codec.allowed_next(prefix)  # (16, K_l)
        assert mask.any(dim=1).all(), "a prefix built from allowed codes must allow a code"
        scores = torch.rand(mask.shape, generator=generator).masked_fill(~mask, -1.0)
        prefix = torch.cat([prefix, scores.argmax(dim=1, keepdim=True)], dim=1)
    assert codec.is_legal(prefix).all()


@settings(deadline=None, max_examples=40)
@given(codes=item_codes())
def test_allowed_next_allows_every_real_prefix(codes) -> None:
    codec = SemanticIdCodec(codes, SIZES)
    full = codec.encode(torch.arange(len(codes)))
    for level in range(codec.num_levels):
        mask = codec.allowed_next(full[:, :level])
        assert mask[torch.arange(len(full)), full[:, level]].all()


def test_collisions_get_one_disambiguation_level() -> None:
    codes = torch.tensor([[0, 1, 1], [0, 1, 1], [2, 0, 0], [0, 1, 1]])
    codec = SemanticIdCodec(codes, SIZES, collision_policy="extend")
    assert codec.num_levels == 4
    assert codec.codebook_sizes == (3, 4, 2, 3)  # the largest group has 3 items
    # Rank within the colliding group, in item-id order; a lone item gets 0.
    assert codec.encode(torch.arange(4))[:, 3].tolist() == [0, 1, 0, 2]
    assert codec.decode(torch.tensor([[0, 1, 1, 2], [0, 1, 1, 0], [2, 0, 0, 1]])).tolist() == [
        3, 0, -1,
    ]
    assert len(codec.unreachable_items) == 0


def test_no_collision_means_no_extra_level() -> None:
    codec = SemanticIdCodec(torch.tensor([[0, 1, 1], [2, 0, 0]]), SIZES)
    assert codec.num_levels == 3 and codec.codebook_sizes == SIZES


def test_owner_policy_gives_the_code_to_the_lowest_id() -> None:
    codes = torch.tensor([[0, 1, 1], [0, 1, 1], [2, 0, 0], [0, 1, 1]])
    codec = SemanticIdCodec(codes, SIZES, collision_policy="owner")
    assert codec.num_levels == 3
    assert codec.unreachable_items.tolist() == [1, 3]
    assert codec.decode(codes).tolist() == [0, 0, 2, 0]


def test_save_load_gives_identical_decoding(tmp_path) -> None:
    codes = torch.tensor([[0, 1, 1], [0, 1, 1], [2, 0, 0], [1, 3, 1]])
    codec = SemanticIdCodec(codes, SIZES)
    path = tmp_path / "codec.safetensors"
    codec.save(path)
    loaded = SemanticIdCodec.load(path)
    every_code = torch.cartesian_prod(*(torch.arange(size) for size in codec.codebook_sizes))
    assert torch.equal(loaded.decode(every_code), codec.decode(every_code))
    assert loaded.codebook_sizes == codec.codebook_sizes
    assert [p.name for p in tmp_path.iterdir()] == ["codec.safetensors"]  # no temp file left


def test_corrupt_or_foreign_codec_files_are_clear_errors(tmp_path) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="corrupt.safetensors is not a readable codec file"):
        SemanticIdCodec.load(corrupt)
    good = tmp_path / "good.safetensors"
    SemanticIdCodec(torch.tensor([[0, 1, 1]]), SIZES).save(good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated.safetensors is not a readable codec file"):
        SemanticIdCodec.load(truncated)
    future = tmp_path / "future.safetensors"
    save_file({"semantic_codes": torch.tensor([[0, 1, 1]])}, future, metadata={
        "format": "onerec-lab/semantic-id-codec", "format_version": "99",
        "codebook_sizes": "[3, 4, 2]", "collision_policy": "extend",
    })
    with pytest.raises(ValueError, match="future.safetensors has codec format_version 99"):
        SemanticIdCodec.load(future)
    with pytest.raises(ValueError, match="missing.safetensors does not exist"):
        SemanticIdCodec.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    ("codes", "sizes", "policy", "message"),
    [
        (torch.tensor([[0, 4, 0]]), SIZES, "extend", r"item_codes\[:, 1\] must lie in \[0, 4\)"),
        (torch.tensor([[0, 1]]), SIZES, "extend", r"shape \(N, 3\)"),
        (torch.tensor([[0, 1, 1]]), SIZES, "first", "collision_policy"),
        (torch.zeros(1, 5, dtype=torch.long), (2**13,) * 5, "extend", "beyond int64"),
    ],
)
def test_bad_codec_inputs_are_clear_errors(codes, sizes, policy, message) -> None:
    with pytest.raises(ValueError, match=message):
        SemanticIdCodec(codes, sizes, policy)
