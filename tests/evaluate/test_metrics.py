"""Every metric in omnirec.evaluate.metrics against a naive, textbook reference.

The references below work on plain Python ranked lists and relevant *sets* with explicit loops; they
share no code (and no vectorised trick) with the library. Randomised checks use hypothesis with
`derandomize=True`, so every run draws the same examples.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from omnirec.evaluate import metrics

SETTINGS = settings(derandomize=True, database=None, deadline=None, max_examples=60)


# ------------------------------------------------------------------------ naive references


def ref_hit_rate(ranked: list[int], relevant: set[int], k: int) -> float:
    return 1.0 if any(item in relevant for item in ranked[:k]) else 0.0


def _n_hits(ranked: list[int], relevant: set[int], k: int) -> int:
    n = 0
    for item in ranked[:k]:
        if item in relevant:
            n += 1
    return n


def ref_recall(ranked: list[int], relevant: set[int], k: int) -> float:
    return _n_hits(ranked, relevant, k) / len(relevant) if relevant else 0.0


def ref_precision(ranked: list[int], relevant: set[int], k: int) -> float:
    return _n_hits(ranked, relevant, k) / k


def ref_f1(ranked: list[int], relevant: set[int], k: int) -> float:
    p, r = ref_precision(ranked, relevant, k), ref_recall(ranked, relevant, k)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def ref_ndcg(ranked: list[int], relevant: set[int], k: int) -> float:
    dcg = 0.0
    for i, item in enumerate(ranked[:k]):
        if item in relevant:
            dcg += 1.0 / math.log2(i + 2)
    idcg = 0.0
    for i in range(min(len(relevant), k)):
        idcg += 1.0 / math.log2(i + 2)
    return dcg / idcg if idcg > 0 else 0.0


def ref_mrr(ranked: list[int], relevant: set[int], k: int) -> float:
    for i, item in enumerate(ranked[:k]):
        if item in relevant:
            return 1.0 / (i + 1)
    return 0.0


def ref_ap(ranked: list[int], relevant: set[int], k: int) -> float:
    if not relevant:
        return 0.0
    found, total = 0, 0.0
    for i, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            found += 1
            total += found / i  # precision@i at a relevant position i
    return total / min(len(relevant), k)


def ref_coverage(lists: list[list[int]], n_items: int) -> float:
    seen = set()
    for row in lists:
        for item in row:
            if 1 <= item <= n_items:
                seen.add(item)
    return len(seen) / n_items


def _counts(lists: list[list[int]], n_items: int) -> list[int]:
    counts = [0] * n_items
    for row in lists:
        for item in row:
            if 1 <= item <= n_items:
                counts[item - 1] += 1
    return counts


def ref_gini_mad(lists: list[list[int]], n_items: int) -> float:
    """Gini as the relative mean absolute difference: sum_ij |x_i - x_j| / (2 n^2 mean)."""
    x = _counts(lists, n_items)
    total = sum(x)
    if total == 0:
        return 0.0
    mad = 0.0
    for a in x:
        for b in x:
            mad += abs(a - b)
    return mad / (2 * n_items * total)


def ref_gini_lorenz(lists: list[list[int]], n_items: int) -> float:
    """Gini as 1 - 2 * (area under the Lorenz curve), trapezoids over the sorted cumulative shares."""
    x = sorted(_counts(lists, n_items))
    total = sum(x)
    if total == 0:
        return 0.0
    area, cum_prev = 0.0, 0.0
    for value in x:
        cum = cum_prev + value / total
        area += (cum_prev + cum) / (2 * n_items)
        cum_prev = cum
    return 1.0 - 2.0 * area


def ref_novelty(ranked: list[int], users_per_item: list[float], n_users: int) -> float:
    total = 0.0
    for item in ranked:
        total += -math.log2(users_per_item[item] / n_users)
    return total / len(ranked)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    dot, na, nb = 0.0, 0.0, 0.0
    for x, y in zip(a.tolist(), b.tolist()):
        dot += x * y
        na += x * x
        nb += y * y
    return dot / math.sqrt(na * nb)


def ref_ild(ranked: list[int], vectors: np.ndarray) -> float:
    pairs = list(itertools.combinations(ranked, 2))
    if not pairs:
        return 0.0
    return 1.0 - sum(_cosine(vectors[a], vectors[b]) for a, b in pairs) / len(pairs)


def ref_rmse(predicted: list[float], actual: list[float]) -> float:
    return math.sqrt(sum((p - a) ** 2 for p, a in zip(predicted, actual)) / len(predicted))


def ref_mae(predicted: list[float], actual: list[float]) -> float:
    return sum(abs(p - a) for p, a in zip(predicted, actual)) / len(predicted)


def hits_of(lists: list[list[int]], relevant: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(n, K) hit booleans and (n,) sizes of the relevant sets, as the library takes them."""
    hits = np.array([[item in rel for item in row] for row, rel in zip(lists, relevant)], dtype=bool)
    return hits.reshape(len(lists), -1), np.array([len(rel) for rel in relevant], dtype=np.int64)


# ------------------------------------------------------------------------ strategies


@st.composite
def ranking_cases(draw):
    """Users with a ranked list (distinct items, one common length), a relevant set each, and a k.

    Relevant sets may be empty, larger than k, or disjoint from the list; k may exceed the list length.
    """
    n_items = draw(st.integers(1, 25))
    length = draw(st.integers(1, n_items))
    n_users = draw(st.integers(1, 6))
    lists = [draw(st.permutations(range(1, n_items + 1)))[:length] for _ in range(n_users)]
    relevant = [draw(st.sets(st.integers(1, n_items), max_size=n_items)) for _ in range(n_users)]
    k = draw(st.integers(1, length + 3))
    return lists, relevant, k


ACCURACY_CASES = {
    "hr": (lambda h, n, k: metrics.hit_rate(h, k), ref_hit_rate),
    "recall": (metrics.recall, ref_recall),
    "precision": (lambda h, n, k: metrics.precision(h, k), ref_precision),
    "f1": (metrics.f1, ref_f1),
    "ndcg": (metrics.ndcg, ref_ndcg),
    "mrr": (lambda h, n, k: metrics.mrr(h, k), ref_mrr),
    "map": (metrics.average_precision, ref_ap),
}


# ------------------------------------------------------------------------ accuracy: randomised


@pytest.mark.parametrize("name", list(ACCURACY_CASES))
@SETTINGS
@given(case=ranking_cases())
def test_accuracy_metric_matches_reference(name, case):
    lists, relevant, k = case
    library, reference = ACCURACY_CASES[name]
    hits, n_relevant = hits_of(lists, relevant)
    got = library(hits, n_relevant, k)
    expected = [reference(row, rel, k) for row, rel in zip(lists, relevant)]
    assert got.shape == (len(lists),)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(case=ranking_cases())
def test_accuracy_metrics_bundle_has_every_metric_at_every_k(case):
    lists, relevant, k = case
    hits, n_relevant = hits_of(lists, relevant)
    ks = tuple(sorted({1, k, k + 2}))
    out = metrics.accuracy_metrics(hits, n_relevant, ks)
    assert set(out) == {f"{m}@{kk}" for m in metrics.ACCURACY for kk in ks}
    for kk in ks:
        for name, (_, reference) in ACCURACY_CASES.items():
            expected = [reference(row, rel, kk) for row, rel in zip(lists, relevant)]
            np.testing.assert_allclose(out[f"{name}@{kk}"], expected, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(case=ranking_cases())
def test_accuracy_metrics_are_bounded(case):
    lists, relevant, k = case
    hits, n_relevant = hits_of(lists, relevant)
    for name, values in metrics.accuracy_metrics(hits, n_relevant, (k,)).items():
        assert np.isfinite(values).all(), name
        assert ((values >= 0) & (values <= 1 + 1e-12)).all(), name


# ------------------------------------------------------------------------ accuracy: by hand


def test_hand_computed_example():
    # ranked [10, 20, 30, 40], relevant {20, 40, 99}: hits at ranks 2 and 4, one relevant item never ranked
    hits = np.array([[False, True, False, True]])
    n_rel = np.array([3])
    k = 4
    assert metrics.hit_rate(hits, k)[0] == 1.0
    assert metrics.recall(hits, n_rel, k)[0] == pytest.approx(2 / 3)
    assert metrics.precision(hits, k)[0] == pytest.approx(0.5)
    assert metrics.f1(hits, n_rel, k)[0] == pytest.approx(4 / 7)  # 2 * 1/2 * 2/3 / (1/2 + 2/3)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics.ndcg(hits, n_rel, k)[0] == pytest.approx(dcg / idcg)
    assert metrics.ndcg(hits, n_rel, k)[0] == pytest.approx(0.4981893, abs=1e-7)
    assert metrics.mrr(hits, k)[0] == pytest.approx(0.5)
    assert metrics.average_precision(hits, n_rel, k)[0] == pytest.approx((1 / 2 + 2 / 4) / 3)
    # at k = 1 nothing is hit
    for values in metrics.accuracy_metrics(hits, n_rel, (1,)).values():
        assert values[0] == 0.0
    # at k = 2: one hit at rank 2
    assert metrics.ndcg(hits, n_rel, 2)[0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert metrics.average_precision(hits, n_rel, 2)[0] == pytest.approx(0.5 / 2)
    assert metrics.recall(hits, n_rel, 2)[0] == pytest.approx(1 / 3)


def test_user_with_no_hit_scores_zero_everywhere():
    hits = np.array([[False, False, False], [True, False, False]])
    n_rel = np.array([2, 1])
    out = metrics.accuracy_metrics(hits, n_rel, (1, 3))
    for name, values in out.items():
        assert values[0] == 0.0, name
        assert values[1] > 0.0, name


def test_more_relevant_items_than_k():
    hits = np.array([[True, True, False]])
    n_rel = np.array([5])
    assert metrics.recall(hits, n_rel, 2)[0] == pytest.approx(2 / 5)
    assert metrics.precision(hits, 2)[0] == 1.0
    # the ideal list has only k = 2 slots, so a perfect top-2 is a perfect NDCG and AP
    assert metrics.ndcg(hits, n_rel, 2)[0] == pytest.approx(1.0)
    assert metrics.average_precision(hits, n_rel, 2)[0] == pytest.approx(1.0)
    # at k = 3 the ideal fills 3 slots and the third slot is a miss
    idcg3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics.ndcg(hits, n_rel, 3)[0] == pytest.approx((1 + 1 / math.log2(3)) / idcg3)
    assert metrics.average_precision(hits, n_rel, 3)[0] == pytest.approx(2 / 3)


def test_k_larger_than_the_list():
    hits = np.array([[True, False]])
    n_rel = np.array([1])
    k = 5
    assert metrics.precision(hits, k)[0] == pytest.approx(1 / 5)  # missing slots count as misses
    assert metrics.recall(hits, n_rel, k)[0] == 1.0
    assert metrics.ndcg(hits, n_rel, k)[0] == pytest.approx(1.0)
    assert metrics.mrr(hits, k)[0] == 1.0
    assert metrics.average_precision(hits, n_rel, k)[0] == 1.0
    assert metrics.f1(hits, n_rel, k)[0] == pytest.approx(2 * 0.2 * 1 / 1.2)


def test_no_relevant_items_gives_zero_not_nan():
    hits = np.zeros((2, 3), dtype=bool)
    n_rel = np.array([0, 0])
    for name, values in metrics.accuracy_metrics(hits, n_rel, (1, 3)).items():
        np.testing.assert_array_equal(values, [0.0, 0.0], err_msg=name)


def test_module_doctest_numbers():
    hits = np.array([[False, True, False]])
    assert metrics.ndcg(hits, np.array([1]), 3)[0] == pytest.approx(1 / math.log2(3))


# ------------------------------------------------------------------------ coverage and Gini


@st.composite
def recommendation_lists(draw, allow_padding: bool = False):
    n_items = draw(st.integers(1, 15))
    k = draw(st.integers(1, 6))
    n_users = draw(st.integers(1, 8))
    low = 0 if allow_padding else 1
    lists = [[draw(st.integers(low, n_items)) for _ in range(k)] for _ in range(n_users)]
    return lists, n_items


@SETTINGS
@given(case=recommendation_lists(allow_padding=True))
def test_coverage_matches_reference(case):
    lists, n_items = case
    assert metrics.coverage(np.array(lists), n_items) == pytest.approx(ref_coverage(lists, n_items), abs=1e-12)


def test_coverage_by_hand():
    assert metrics.coverage(np.array([[1, 2], [2, 3]]), 5) == pytest.approx(0.6)
    assert metrics.coverage(np.array([[0, 2], [2, 0]]), 4) == pytest.approx(0.25)  # padding 0 is no item
    assert metrics.coverage(np.array([[1, 2, 3, 4]]), 4) == 1.0


@SETTINGS
@given(case=recommendation_lists(allow_padding=False))
def test_gini_matches_mean_absolute_difference_and_lorenz(case):
    lists, n_items = case
    got = metrics.gini(np.array(lists), n_items)
    assert got == pytest.approx(ref_gini_mad(lists, n_items), abs=1e-12)
    assert got == pytest.approx(ref_gini_lorenz(lists, n_items), abs=1e-12)
    assert 0.0 <= got <= 1.0


def test_gini_by_hand():
    # counts over items 1..4: [3, 1, 0, 0] -> sum_ij |xi - xj| = 20, 2 * n^2 * mean = 32
    assert metrics.gini(np.array([[1, 1], [1, 2]]), 4) == pytest.approx(0.625)
    # every item recommended equally often: perfectly equal
    assert metrics.gini(np.array([[1, 2], [3, 4], [2, 1], [4, 3]]), 4) == pytest.approx(0.0)
    # a single item out of n: (n - 1) / n, the maximum for a finite catalogue
    assert metrics.gini(np.array([[3], [3], [3]]), 5) == pytest.approx(4 / 5)


def test_gini_ignores_padding_and_handles_empty():
    assert metrics.gini(np.array([[0, 1], [0, 2]]), 2) == pytest.approx(0.0)
    assert metrics.gini(np.zeros((2, 2), dtype=np.int64), 3) == 0.0


# ------------------------------------------------------------------------ novelty


@st.composite
def novelty_cases(draw):
    n_items = draw(st.integers(1, 12))
    n_users = draw(st.integers(1, 30))
    counts = [0.0] + [float(draw(st.integers(1, n_users))) for _ in range(n_items)]
    k = draw(st.integers(1, 5))
    lists = [[draw(st.integers(1, n_items)) for _ in range(k)] for _ in range(draw(st.integers(1, 5)))]
    return lists, counts, n_users


@SETTINGS
@given(case=novelty_cases())
def test_novelty_matches_reference(case):
    lists, counts, n_users = case
    got = metrics.novelty(np.array(lists), np.array(counts), n_users)
    expected = [ref_novelty(row, counts, n_users) for row in lists]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_novelty_by_hand():
    counts = np.array([0.0, 4.0, 1.0, 2.0])  # 4 users: items had by 4, 1 and 2 users
    got = metrics.novelty(np.array([[1, 2], [3, 3], [1, 1]]), counts, 4)
    np.testing.assert_allclose(got, [(0 + 2) / 2, 1.0, 0.0])


def test_novelty_treats_unseen_items_as_seen_once():
    # an item with no training interaction gets the largest finite self-information, log2(n_users)
    got = metrics.novelty(np.array([[1]]), np.array([0.0, 0.0]), 8)
    assert got[0] == pytest.approx(3.0)


# ------------------------------------------------------------------------ intra-list diversity


def _unit_rows(rng: np.random.Generator, n_items: int, dim: int, sparsity: float) -> np.ndarray:
    """(n_items + 1, dim) unit rows (row 0 is padding, left zero); some entries zeroed, never a whole row."""
    vectors = rng.normal(size=(n_items + 1, dim))
    vectors[rng.random(vectors.shape) < sparsity] = 0.0
    vectors[np.arange(n_items + 1), rng.integers(0, dim, n_items + 1)] = rng.uniform(0.5, 1.5, n_items + 1)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[0] = 0.0
    return vectors


@st.composite
def ild_cases(draw):
    n_items = draw(st.integers(2, 15))
    dim = draw(st.integers(1, 6))
    k = draw(st.integers(2, n_items))
    n_users = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    sparsity = draw(st.sampled_from([0.0, 0.5, 0.8]))
    lists = [draw(st.permutations(range(1, n_items + 1)))[:k] for _ in range(n_users)]
    return lists, _unit_rows(np.random.default_rng(seed), n_items, dim, sparsity)


@SETTINGS
@given(case=ild_cases())
def test_ild_dense_matches_pairwise_cosine(case):
    lists, vectors = case
    got = metrics.intra_list_diversity(np.array(lists), vectors)
    expected = [ref_ild(row, vectors) for row in lists]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(case=ild_cases())
def test_ild_sparse_matches_pairwise_cosine(case):
    lists, vectors = case
    got = metrics.intra_list_diversity(np.array(lists), sp.csr_matrix(vectors))
    expected = [ref_ild(row, vectors) for row in lists]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(case=ild_cases())
def test_ild_float32_vectors(case):
    # item_vectors_from_matrix hands over float32 unit rows
    lists, vectors = case
    got = metrics.intra_list_diversity(np.array(lists), vectors.astype(np.float32))
    expected = [ref_ild(row, vectors) for row in lists]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_ild_by_hand_dense_and_sparse():
    s = 1 / math.sqrt(2)
    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [s, s]])
    lists = np.array([[1, 2, 3], [1, 3, 2], [3, 3, 3]])
    # pairs (1,2)=0, (1,3)=s, (2,3)=s -> 1 - 2s/3; the same set in another order; three copies of one item -> 0
    expected = [1 - 2 * s / 3, 1 - 2 * s / 3, 0.0]
    np.testing.assert_allclose(metrics.intra_list_diversity(lists, vectors), expected, atol=1e-12)
    np.testing.assert_allclose(metrics.intra_list_diversity(lists, sp.csr_matrix(vectors)), expected, atol=1e-6)
    np.testing.assert_allclose(metrics.intra_list_diversity(np.array([[1, 2]]), vectors), [1.0], atol=1e-12)
    np.testing.assert_allclose(metrics.intra_list_diversity(np.array([[1, 2]]), sp.csr_matrix(vectors)), [1.0], atol=1e-6)


def test_ild_of_single_item_lists_is_zero():
    vectors = np.eye(3)
    np.testing.assert_array_equal(metrics.intra_list_diversity(np.array([[1], [2]]), vectors), [0.0, 0.0])
    np.testing.assert_array_equal(metrics.intra_list_diversity(np.array([[1], [2]]), sp.csr_matrix(vectors)), [0.0, 0.0])


# ------------------------------------------------------------------------ rating prediction

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@st.composite
def rating_pairs(draw):
    n = draw(st.integers(1, 40))
    predicted = [draw(finite) for _ in range(n)]
    actual = [draw(finite) for _ in range(n)]
    users = [draw(st.integers(0, 6)) for _ in range(n)]
    return users, predicted, actual


@SETTINGS
@given(case=rating_pairs())
def test_rmse_and_mae_match_reference(case):
    _, predicted, actual = case
    assert metrics.rmse(np.array(predicted), np.array(actual)) == pytest.approx(ref_rmse(predicted, actual), rel=1e-9, abs=1e-12)
    assert metrics.mae(np.array(predicted), np.array(actual)) == pytest.approx(ref_mae(predicted, actual), rel=1e-9, abs=1e-12)
    assert metrics.rmse(predicted, actual) >= metrics.mae(predicted, actual) - 1e-12


@SETTINGS
@given(case=rating_pairs())
def test_per_user_error_matches_reference(case):
    users, predicted, actual = case
    out = metrics.per_user_error(np.array(users), np.array(predicted), np.array(actual))
    expected_users = sorted(set(users))
    np.testing.assert_array_equal(out["users"], expected_users)
    for i, user in enumerate(expected_users):
        mine_p = [p for u, p in zip(users, predicted) if u == user]
        mine_a = [a for u, a in zip(users, actual) if u == user]
        assert out["rmse"][i] == pytest.approx(ref_rmse(mine_p, mine_a), rel=1e-9, abs=1e-12)
        assert out["mae"][i] == pytest.approx(ref_mae(mine_p, mine_a), rel=1e-9, abs=1e-12)


def test_rating_errors_by_hand():
    assert metrics.rmse(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])) == pytest.approx(math.sqrt(5 / 3))
    assert metrics.mae(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert metrics.rmse([4, 4], [4, 4]) == 0.0
    out = metrics.per_user_error(np.array([2, 1, 2]), np.array([1.0, 2.0, 3.0]), np.zeros(3))
    np.testing.assert_array_equal(out["users"], [1, 2])
    np.testing.assert_allclose(out["rmse"], [2.0, math.sqrt(5)])
    np.testing.assert_allclose(out["mae"], [2.0, 2.0])


@pytest.mark.parametrize(
    ("predicted", "actual"),
    [
        ([], []),
        ([1.0, 2.0, 3.0], [1.0, 2.0]),
        ([1.0, 2.0], [1.0, 2.0, 3.0]),
        ([[1.0], [2.0]], [1.0, 2.0]),
    ],
    ids=["empty", "longer-prediction", "longer-actual", "shape"],
)
@pytest.mark.parametrize("fn", [metrics.rmse, metrics.mae], ids=["rmse", "mae"])
def test_rating_errors_reject_empty_or_mismatched(fn, predicted, actual):
    with pytest.raises(ValueError):
        fn(np.array(predicted), np.array(actual))


def test_per_user_error_rejects_empty_or_mismatched():
    with pytest.raises(ValueError):
        metrics.per_user_error(np.array([], dtype=np.int64), np.array([]), np.array([]))
    with pytest.raises(ValueError):
        metrics.per_user_error(np.array([1, 2]), np.array([1.0, 2.0]), np.array([1.0]))


def test_ild_normalises_its_input_vectors():
    vectors = np.array([[0.0, 0.0], [3.0, 0.0], [1.0, 1.0]])
    out = metrics.intra_list_diversity(np.array([[1, 2]]), vectors)
    assert out[0] == pytest.approx(1 - 1 / np.sqrt(2))
    out_sparse = metrics.intra_list_diversity(np.array([[1, 2]]), sp.csr_matrix(vectors))
    assert out_sparse[0] == pytest.approx(1 - 1 / np.sqrt(2))


def test_ild_and_novelty_skip_empty_slots():
    vectors = np.array([[5.0, 5.0], [1.0, 0.0], [0.0, 1.0]])
    assert metrics.intra_list_diversity(np.array([[1, 2, 0]]), vectors)[0] == pytest.approx(1.0)
    users = np.array([0.0, 1.0, 4.0])
    assert metrics.novelty(np.array([[1, 0]]), users, n_users=4)[0] == pytest.approx(2.0)


def test_novelty_share_never_exceeds_one():
    assert metrics.novelty(np.array([[1]]), np.array([0.0, 5.0]), n_users=2)[0] == 0.0


def test_per_user_error_rejects_users_of_another_length():
    with pytest.raises(ValueError, match="users has shape"):
        metrics.per_user_error(np.array([1, 2]), np.array([1.0, 2.0, 3.0]), np.zeros(3))


def test_ild_leaves_out_items_without_a_vector():
    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    assert metrics.intra_list_diversity(np.array([[1, 2, 3]]), vectors)[0] == pytest.approx(0.0)
    assert metrics.intra_list_diversity(np.array([[1, 2, 3]]), sp.csr_matrix(vectors))[0] == pytest.approx(0.0)
