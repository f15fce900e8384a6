"""The data layer on the organisers' layout: tables, feature files and their mess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_labels, write_pkl
from taemi.data import (
    TARGETS,
    ChallengeData,
    DataError,
    load_feature,
    read_id_list,
    read_labels,
    read_transcripts,
)


def test_read_labels_keeps_ids_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "train_split.csv"
    write_labels(path, ["00000", "00007", "08071"])
    frame = read_labels(path)
    assert frame["Filename"].tolist() == ["00000", "00007", "08071"]
    assert list(frame.columns) == ["Filename", *TARGETS]
    assert frame[list(TARGETS)].to_numpy().dtype == np.float64


def test_misspelt_column_is_named_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "train_split.csv"
    write_labels(path, ["00000", "00001"]).rename(
        columns={"Empathic Pain": "Empathic_Pain"}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"missing column 'Empathic Pain'.*Empathic_Pain"):
        read_labels(path)


def test_missing_column_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "valid_split.csv"
    write_labels(path, ["00000"]).drop(columns=["Joy"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"valid_split.csv: missing column 'Joy'"):
        read_labels(path)


def test_duplicate_ids_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "train_split.csv"
    write_labels(path, ["00000", "00001", "00001"])
    with pytest.raises(DataError, match=r"duplicate Filename ids: 00001"):
        read_labels(path)


@pytest.mark.parametrize(("value", "message"), [
    (1.5, r"'Joy', id 00001: label 1.5 is outside \[0, 1\]"),
    (-0.1, r"outside \[0, 1\]"),
    (np.nan, r"'Joy' has empty/NaN labels for ids \['00001'\]"),
    ("high", r"'Joy', id 00001: 'high' is not a number"),
])
def test_bad_labels_name_column_and_id(tmp_path: Path, value: object, message: str) -> None:
    path = tmp_path / "train_split.csv"
    frame = write_labels(path, ["00000", "00001"])
    frame["Joy"] = frame["Joy"].astype(object)
    frame.loc[1, "Joy"] = value
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=message):
        read_labels(path)


def test_integer_ids_are_refused_with_the_likely_cause(tmp_path: Path) -> None:
    path = tmp_path / "train_split.csv"
    write_labels(path, ["00000", "00001"]).assign(Filename=[0, 1]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"row 2 has Filename '0', expected a 5-digit id"):
        read_labels(path)


def test_load_feature_repairs_and_reports(tmp_path: Path) -> None:
    array = np.ones((6, 3), np.float32)
    array[2, 1] = np.nan
    array[4] = np.inf
    loaded = load_feature(write_pkl(tmp_path / "a.pkl", array))
    assert (loaded.nan_values, loaded.range_values, loaded.bad_rows) == (1, 3, 1)
    assert loaded.rows_ok.tolist() == [True, True, True, True, False, True]
    assert np.isfinite(loaded.array).all()
    assert loaded.array[2, 1] == 0 and loaded.array[0, 0] == 1

    one_d = load_feature(write_pkl(tmp_path / "b.pkl", np.arange(5.0)))
    assert one_d.was_1d and one_d.array.shape == (1, 5)

    batched = load_feature(write_pkl(tmp_path / "c.pkl", np.zeros((1, 7, 3), np.float64)))
    assert batched.array.shape == (7, 3) and batched.array.dtype == np.float32


def test_pickled_torch_tensor_is_refused_clearly(tmp_path: Path) -> None:
    path = write_pkl(tmp_path / "00004.pkl", torch.zeros(1, 7, 3))
    with pytest.raises(DataError, match=r"00004.pkl: refused to unpickle torch\..*"
                                        r"expected a pickled numpy array"):
        load_feature(path)


def test_corrupt_feature_file_names_itself(tmp_path: Path) -> None:
    bad = tmp_path / "00003.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"00003.pkl: cannot read feature file"):
        load_feature(bad)
    with pytest.raises(DataError, match=r"expected a \(T, D\) array"):
        load_feature(write_pkl(tmp_path / "d.pkl", np.zeros((2, 3, 4))))


def test_missing_root_says_how_to_make_one(tmp_path: Path) -> None:
    data = ChallengeData(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"does not exist.*taemi synth"):
        _ = data.train


def test_layout_ids_transcripts_and_features(messy_root: Path) -> None:
    data = ChallengeData(messy_root)
    assert data.test_ids == ["00009", "00010", "00011"]
    assert len(data.labels) == 9 and set(data.labels["split"]) == {"train", "valid"}
    assert data.all_ids == [f"{i:05d}" for i in range(12)]
    assert data.transcripts["00001"] == "" and data.transcripts["00003"] == ""
    report = data.transcript_report()
    assert (report.empty, report.missing) == (2, 0)
    files = data.feature_files("vit")
    assert "00002" not in files and files["00010"].parent.name == "vit"
    assert files["00010"].parent.parent.name == "test_data"
    with pytest.raises(DataError, match=r"feature folder 'clip' not found"):
        data.feature_files("clip")


def test_overlapping_splits_are_refused(tmp_path: Path) -> None:
    write_labels(tmp_path / "train_split.csv", ["00000", "00001"])
    write_labels(tmp_path / "valid_split.csv", ["00001", "00002"])
    with pytest.raises(DataError, match=r"ids in both .*00001"):
        _ = ChallengeData(tmp_path).labels


def test_test_list_and_transcripts_tables(tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("12660\n12661\n")
    assert read_id_list(tmp_path / "ids.txt") == ["12660", "12661"]
    pd.DataFrame({"Filename": ["12660"]}).to_csv(tmp_path / "ids.csv", index=False)
    assert read_id_list(tmp_path / "ids.csv") == ["12660"]
    pd.DataFrame({"Filename": ["00001"], "txt": ["hi"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"missing column 'text'"):
        read_transcripts(tmp_path / "t.csv")
