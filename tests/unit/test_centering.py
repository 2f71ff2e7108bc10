"""Language centering (service/centering.py) on hand-made vectors whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from service.centering import MIN_SENTENCES, center, center_by_own_mean, language_mean


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_centering_removes_a_shared_language_offset_and_finds_the_translation() -> None:
    """Two languages share meanings but each adds its own offset: plain cosine pairs every sentence with
    the offset-heavy one; once each side is centred on its own mean, each finds its own translation."""
    rng = np.random.default_rng(0)
    meanings = rng.normal(size=(MIN_SENTENCES, 16))
    offset_a, offset_b = np.zeros(16), np.zeros(16)
    offset_a[0], offset_b[1] = 12.0, 12.0
    side_a = _unit(meanings + offset_a + 0.05 * rng.normal(size=meanings.shape))
    side_b = _unit(meanings + offset_b + 0.05 * rng.normal(size=meanings.shape))
    gold = np.arange(MIN_SENTENCES)
    plain = (side_a @ side_b.T).argmax(axis=1)
    centred = (center_by_own_mean(side_a) @ center_by_own_mean(side_b).T).argmax(axis=1)
    assert (plain == gold).mean() < 0.5
    assert (centred == gold).all()


def test_center_returns_unit_rows_and_keeps_a_row_equal_to_the_mean_zero() -> None:
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    out = center(rows, np.array([0.5, 0.5]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:2], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out[0], [np.sqrt(0.5), -np.sqrt(0.5)], atol=1e-6)
    assert not out[2].any()


def test_language_mean_refuses_too_few_sentences_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_SENTENCES} sentences, got 3"):
        language_mean(np.ones((3, 4)))
    with pytest.raises(ValueError, match="expected a matrix"):
        language_mean(np.ones(4))
    with pytest.raises(ValueError, match="do not fit"):
        center(np.ones((2, 4)), np.ones(3))
    np.testing.assert_allclose(language_mean(np.eye(MIN_SENTENCES)), np.full(MIN_SENTENCES, 1 / MIN_SENTENCES))
