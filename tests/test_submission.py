"""Submissions: built in the challenge format, every validation failure named, no overwrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taemi.cli import main
from taemi.data import TARGETS
from taemi.submission import (
    HEADER,
    SubmissionError,
    make_submission,
    submission_problems,
    write_submission,
)

TEST_IDS = ["12660", "12661", "12662"]


def predictions(ids=TEST_IDS, seed: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(np.random.default_rng(seed).random((len(ids), 6)) * 1.2 - 0.1,
                         columns=list(TARGETS))
    frame.insert(0, "Filename", ids)
    return frame


def test_make_and_write_a_valid_submission(tmp_path: Path) -> None:
    frame = make_submission(predictions(TEST_IDS[::-1]), TEST_IDS)
    assert frame["Filename"].tolist() == TEST_IDS
    assert frame[list(TARGETS)].to_numpy().min() >= 0 and frame[list(TARGETS)].max().max() <= 1
    path = write_submission(frame, tmp_path / "sub.csv", TEST_IDS)
    assert path.read_text().splitlines()[0] == HEADER
    assert path.read_text().splitlines()[1].startswith("12660,")
    assert submission_problems(path, TEST_IDS) == []
    with pytest.raises(SubmissionError, match="lack 1 test ids"):
        make_submission(predictions(TEST_IDS[:2]), TEST_IDS)


def test_never_overwritten_silently(tmp_path: Path) -> None:
    path = tmp_path / "sub.csv"
    write_submission(make_submission(predictions(), TEST_IDS), path, TEST_IDS)
    # the file itself (an atomic rewrite is a new inode; mtimes can tie within a tick)
    stamp = (path.stat().st_ino, path.stat().st_mtime_ns)
    first = path.read_bytes()
    write_submission(make_submission(predictions(), TEST_IDS), path, TEST_IDS)  # identical
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp
    other = make_submission(predictions(seed=1), TEST_IDS)
    with pytest.raises(FileExistsError, match="--force"):
        write_submission(other, path, TEST_IDS)
    assert path.read_bytes() == first
    write_submission(other, path, TEST_IDS, overwrite=True)
    assert path.stat().st_ino != stamp[0] and path.read_bytes() != first


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "candidate.csv"
    path.write_text(text)
    return path


GOOD_ROWS = ["12660,0.1,0.2,0.3,0.4,0.5,0.6", "12661,0,0,0,0,0,1", "12662,1,1,1,1,1,1"]


@pytest.mark.parametrize(("lines", "message"), [
    ([HEADER.replace("Empathic Pain", "Empathic_Pain"), *GOOD_ROWS], "header is"),
    ([HEADER.replace("Joy", "Joy2"), *GOOD_ROWS], "exact names and order"),
    ([HEADER, "12660,0.1,0.2,0.3,0.4,0.5,0.6", "12661,0,0,0,0,0,1", "12661,0,0,0,0,0,1"],
     "listed more than once"),
    ([HEADER, *GOOD_ROWS[:2]], "1 test ids missing, e.g. ['12662']"),
    ([HEADER, *GOOD_ROWS, "12663,0,0,0,0,0,0"], "1 ids that are not test ids"),
    ([HEADER, "2660,0.1,0.2,0.3,0.4,0.5,0.6", *GOOD_ROWS[1:]], "not 5-digit strings"),
    ([HEADER, "12660,nan,0.2,0.3,0.4,0.5,0.6", *GOOD_ROWS[1:]], "'Admiration' has 1 values"
     " that are not finite"),
    ([HEADER, "12660,0.1,abc,0.3,0.4,0.5,0.6", *GOOD_ROWS[1:]], "not finite numbers"),
    ([HEADER, "12660,0.1,0.2,1.3,0.4,0.5,0.6", *GOOD_ROWS[1:]], "outside [0, 1]"),
])
def test_each_failure_is_named(tmp_path: Path, lines: list[str], message: str) -> None:
    problems = submission_problems(_write(tmp_path, "\n".join(lines) + "\n"), TEST_IDS)
    assert any(message in p for p in problems), problems


def test_validate_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(TEST_IDS))
    good = _write(tmp_path, "\n".join([HEADER, *GOOD_ROWS]) + "\n")
    assert main(["validate", str(good), "--test-ids", str(ids)]) == 0
    assert "valid submission" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([HEADER, *GOOD_ROWS[:2]]) + "\n")
    assert main(["validate", str(bad), "--test-ids", str(ids)]) == 2
    assert "test ids missing" in capsys.readouterr().err
    assert main(["validate", str(bad)]) == 0  # format alone is fine
    assert "format only" in capsys.readouterr().out


def test_out_of_range_predictions_keep_their_pearson() -> None:
    from taemi.metrics import pearson_per_target
    from taemi.submission import into_range

    rng = np.random.default_rng(0)
    y = rng.random((50, 6))
    pred = y + rng.normal(0, 0.3, size=y.shape)
    pred[:, 0] *= 3  # wider than [0, 1]: rescaled
    pred[:, 1] += 0.5  # above 1, narrow: shifted
    pred[:, 5] = np.clip(pred[:, 5], 0.1, 0.9)  # already in range: untouched
    mapped = into_range(pred)
    assert mapped.min() >= 0 and mapped.max() <= 1
    np.testing.assert_allclose(pearson_per_target(y, mapped), pearson_per_target(y, pred))
    assert (pearson_per_target(y, np.clip(pred, 0, 1)) != pearson_per_target(y, pred)).any()
    np.testing.assert_array_equal(mapped[:, 5], pred[:, 5])


def test_a_non_finite_prediction_names_its_id() -> None:
    frame = pd.DataFrame(np.full((3, 6), 0.5), columns=list(TARGETS))
    frame.insert(0, "Filename", ["00007", "00008", "00009"])
    frame.loc[1, "Joy"] = np.nan
    with pytest.raises(SubmissionError, match=r"first for id 00008, 'Joy'"):
        make_submission(frame, ["00007", "00008", "00009"])
