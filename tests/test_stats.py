"""Bootstrap intervals and McNemar's exact test (microplastics.results.stats)."""
import numpy as np
import pandas as pd
import pytest

from microplastics.results import metrics, stats

CLASSES = ["foam", "hard", "line", "noise", "pellet", "reference"]


def noisy_labels(n: int, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced true labels (like MICRO: many 'hard', few 'reference') and predictions right ~accuracy."""
    rng = np.random.default_rng(seed)
    y_true = rng.choice(CLASSES, n, p=[0.1, 0.6, 0.15, 0.08, 0.06, 0.01])
    wrong = rng.random(n) > accuracy
    y_pred = np.where(wrong, rng.choice(CLASSES, n), y_true)
    return y_true, y_pred


def test_batched_scores_equal_compute_metrics_on_resamples():
    # Small n and a rare class: many resamples lack a class, the case where macro means are subtle.
    y_true, y_pred = noisy_labels(40, 0.7, seed=1)
    t, p = stats.encode(y_true, y_pred, CLASSES)
    samples = np.random.default_rng(2).integers(0, len(t), size=(60, len(t)))
    batch = stats.scores_from_confusion(stats.confusion_batch(t, p, samples, len(CLASSES)))
    for b in range(len(samples)):
        expected = metrics.compute_metrics(y_true[samples[b]], y_pred[samples[b]], CLASSES)
        for score in stats.SCORES:
            assert batch[score][b] == pytest.approx(expected[score], abs=1e-12), (score, b)


def test_intervals_contain_point_estimate_and_narrow_with_n():
    widths = {}
    for n in (60, 2000):
        y_true, y_pred = noisy_labels(n, 0.8, seed=3)
        point = metrics.compute_metrics(y_true, y_pred, CLASSES)
        intervals = stats.bootstrap_intervals(y_true, y_pred, CLASSES, n_boot=500, seed=42)
        for score in stats.SCORES:
            assert intervals[score].contains(point[score]), (n, score, point[score], intervals[score])
        widths[n] = {s: intervals[s].width for s in stats.SCORES}
    for score in stats.SCORES:
        assert 0 < widths[2000][score] < widths[60][score] / 2, (score, widths)


def test_bootstrap_is_seeded():
    y_true, y_pred = noisy_labels(200, 0.8, seed=4)
    a = stats.bootstrap_intervals(y_true, y_pred, CLASSES, n_boot=300, seed=7)
    b = stats.bootstrap_intervals(y_true, y_pred, CLASSES, n_boot=300, seed=7)
    c = stats.bootstrap_intervals(y_true, y_pred, CLASSES, n_boot=300, seed=8)
    assert a == b
    assert a != c


def test_perfect_predictions_give_a_point_interval():
    y = np.array(["foam", "hard", "hard", "line"] * 10)
    intervals = stats.bootstrap_intervals(y, y, CLASSES, n_boot=100)
    assert intervals["accuracy"] == stats.Interval(1.0, 1.0)
    assert intervals["macro_f1"] == stats.Interval(1.0, 1.0)


def test_unknown_label_is_an_error():
    with pytest.raises(ValueError, match="glitter"):
        stats.bootstrap_intervals(["foam"], ["glitter"], CLASSES)


def test_mcnemar_exact_on_a_hand_made_case():
    # 8 crops only A gets right, 2 only B, 30 both right, 5 both wrong.
    a = [True] * 8 + [False] * 2 + [True] * 30 + [False] * 5
    b = [False] * 8 + [True] * 2 + [True] * 30 + [False] * 5
    result = stats.mcnemar_exact(a, b)
    # Two-sided exact binomial: 2 * P(X <= 2 | n=10, p=1/2) = 2 * (1 + 10 + 45) / 1024.
    assert (result.n, result.only_a, result.only_b) == (45, 8, 2)
    assert result.p_value == pytest.approx(112 / 1024)
    assert stats.mcnemar_exact(b, a).p_value == pytest.approx(112 / 1024)
    assert stats.mcnemar_exact([True] * 10, [False] * 10).p_value == pytest.approx(2 / 1024)
    assert stats.mcnemar_exact([True, False], [True, False]).p_value == 1.0


def test_paired_outcomes_match_crops_by_path_not_row_order():
    a = pd.DataFrame({"path": ["x", "y", "z"], "true": ["foam", "hard", "line"], "pred": ["foam", "foam", "line"]})
    b = a.iloc[::-1].assign(pred=["hard", "hard", "hard"]).reset_index(drop=True)  # z, y, x
    right_a, right_b = stats.paired_outcomes(a, b)
    assert right_a.tolist() == [True, False, True]
    assert right_b.tolist() == [False, True, False]
    table = stats.mcnemar_matrix({"a": a, "b": b})
    assert (table[("a", "b")].only_a, table[("a", "b")].only_b) == (2, 1)
    assert (table[("b", "a")].only_a, table[("b", "a")].only_b) == (1, 2)


def test_paired_outcomes_refuse_different_true_labels():
    a = pd.DataFrame({"path": ["x"], "true": ["foam"], "pred": ["foam"]})
    b = pd.DataFrame({"path": ["x"], "true": ["hard"], "pred": ["hard"]})
    with pytest.raises(ValueError, match="different true labels"):
        stats.paired_outcomes(a, b)


def test_exact_interval_replaces_only_a_zero_width_accuracy():
    # Clopper-Pearson at the edges has a closed form: k = n gives [0.025 ** (1/n), 1], k = 0 its mirror
    top, bottom = stats.exact_accuracy_interval(40, 40), stats.exact_accuracy_interval(0, 40)
    assert top.low == pytest.approx(0.025 ** (1 / 40), abs=1e-12) and top.high == 1.0 and top.method == "exact"
    assert bottom.low == 0.0 and bottom.high == pytest.approx(1 - 0.025 ** (1 / 40), abs=1e-12)
    y = np.array(["foam", "hard", "hard", "line"] * 10)
    flat = stats.bootstrap_intervals(y, y, CLASSES, n_boot=100)
    fixed = stats.with_exact_accuracy(flat, 40, 40)
    assert fixed["accuracy"].method == "exact" and fixed["accuracy"].width > 0.05
    assert fixed["macro_f1"] == flat["macro_f1"]
    wide = stats.bootstrap_intervals(y, np.roll(y, 1), CLASSES, n_boot=100)
    assert stats.with_exact_accuracy(wide, 20, 40) == wide
