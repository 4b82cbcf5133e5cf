"""The Amazon Beauty loader: TIGER's leave-one-out split, id mapping and bad files."""

from __future__ import annotations

import numpy as np
import pytest

from envs.beauty import load_beauty
from tests.conftest import shared_data


def write(tmp_path, text: str):
    path = tmp_path / "sequences.txt"
    path.write_text(text)
    return path


def test_split_and_id_mapping_by_hand(tmp_path) -> None:
    path = write(tmp_path, "7 10 30 20\n8 20 20 10 40\n\n")
    dataset = load_beauty(path, max_history=3)
    # Raw ids sorted and renumbered: 10 -> 0, 20 -> 1, 30 -> 2, 40 -> 3.
    assert dataset.raw_item_ids.tolist() == [10, 20, 30, 40]
    assert dataset.num_items == 4 and dataset.num_users == 2
    assert [s.tolist() for s in dataset.train_sequences] == [[0], [1, 1]]
    assert dataset.valid.targets.tolist() == [2, 0]
    assert dataset.valid.histories.tolist() == [[-1, -1, 0], [-1, 1, 1]]
    assert dataset.valid.history_lengths.tolist() == [1, 2]
    assert dataset.test.targets.tolist() == [1, 3]
    assert dataset.test.histories.tolist() == [[-1, 0, 2], [1, 1, 0]]  # capped at the last 3


def test_history_keeps_the_most_recent_items(tmp_path) -> None:
    path = write(tmp_path, "1 " + " ".join(str(item) for item in range(1, 26)) + "\n")
    dataset = load_beauty(path)  # items 1..25 -> ids 0..24; histories capped at 20
    assert dataset.test.histories[0].tolist() == list(range(4, 24))
    assert dataset.valid.histories[0].tolist() == list(range(3, 23))
    assert dataset.train_sequences[0].tolist() == list(range(23))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 2 3 4\n2 5 x 6\n", r"sequences.txt:2: expected integers"),
        ("1 2 3 4\n2 5 6\n", r"sequences.txt:2: a user needs at least 3 items .* got 2"),
        ("1 2 3 4\n2 5 -6 7\n", r"sequences.txt:2: item ids must be >= 0"),
        ("", r"sequences.txt is empty"),
        ("\n  \n", r"sequences.txt is empty"),
    ],
)
def test_malformed_files_name_the_path_and_line(tmp_path, text, message) -> None:
    with pytest.raises(ValueError, match=message):
        load_beauty(write(tmp_path, text))


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="nowhere.txt does not exist"):
        load_beauty(tmp_path / "nowhere.txt")


def test_real_beauty_file() -> None:
    dataset = load_beauty(shared_data("amazon-beauty/Beauty.txt"))
    assert dataset.num_items == 12_101 and dataset.num_users == 22_363
    assert dataset.raw_item_ids[0] == 1 and dataset.raw_item_ids[-1] == 12_101
    # 198,502 interactions, two per user held out for validation and test.
    assert sum(len(sequence) for sequence in dataset.train_sequences) == 198_502 - 2 * 22_363
    # First line "1 1 2 3 4 5": raw ids 1..5 are items 0..4.
    assert dataset.train_sequences[0].tolist() == [0, 1, 2]
    assert (dataset.valid.targets[0], dataset.test.targets[0]) == (3, 4)
    assert dataset.test.histories[0, -4:].tolist() == [0, 1, 2, 3]
    assert dataset.test.history_lengths.max() == 20
    assert np.all(dataset.test.histories[:, -1] == dataset.valid.targets)
