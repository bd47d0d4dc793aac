"""The evaluation protocols of omnirec.evaluate.ranking against brute force.

The model is a fixed score table (distinct scores, so there are no ties); the expected top-k list of
each user is computed by a full numpy argsort of that user's row with the padding column and the
history masked, and the expected metrics by textbook loops over that list.
"""

from __future__ import annotations

import math
import signal

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnirec.data.histories import Histories
from omnirec.data.train_data import TrainData
from omnirec.evaluate.ranking import full_ranking_eval, sample_negatives, sampled_ranking_eval
from omnirec.features.similarity import item_vectors_from_matrix
from omnirec.models.base import Recommender
from omnirec.models.popularity import Popularity

SETTINGS = settings(derandomize=True, database=None, deadline=None, max_examples=25)


class TableModel(Recommender):
    """Scores user u with row u of a fixed (n_users + 1, n_items + 1) table."""

    name = "table"

    def __init__(self, table: np.ndarray):
        super().__init__()
        self.table = np.asarray(table, dtype=np.float32)

    def _fit(self, data: TrainData) -> None:
        assert self.table.shape == (data.n_users + 1, data.n_items + 1)

    def _score(self, batch):
        return self.table[batch.users].copy()

    def _get_state(self):
        return {"table": self.table}

    def _set_state(self, state):
        self.table = state["table"]


def frame(pairs: list[tuple[int, int]]) -> pl.DataFrame:
    """An interactions frame from (user, item) pairs, timestamps in list order."""
    return pl.DataFrame(
        {"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs], "timestamp": list(range(len(pairs)))},
        schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64},
    )


def histories(pairs: list[tuple[int, int]], n_users: int) -> Histories:
    return Histories.from_frame(frame(pairs), n_users)


def fitted(table: np.ndarray, train_pairs: list[tuple[int, int]]) -> TableModel:
    n_users, n_items = table.shape[0] - 1, table.shape[1] - 1
    return TableModel(table).fit(TrainData(frame(train_pairs), n_users, n_items))


# ------------------------------------------------------------------------ brute force


def brute_top_k(table: np.ndarray, user: int, history: set[int], k: int) -> list[int]:
    scores = np.asarray(table[user], dtype=np.float64).copy()
    scores[0] = -np.inf
    for item in history:
        scores[item] = -np.inf
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order if np.isfinite(scores[i])][:k]


def ref_metrics(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    top = ranked[:k]
    n_hit = sum(1 for item in top if item in relevant)
    p = n_hit / k
    r = n_hit / len(relevant)
    dcg = sum(1 / math.log2(i + 2) for i, item in enumerate(top) if item in relevant)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    first = next((i for i, item in enumerate(top) if item in relevant), None)
    found, ap = 0, 0.0
    for i, item in enumerate(top, start=1):
        if item in relevant:
            found += 1
            ap += found / i
    return {
        "hr": float(n_hit > 0), "recall": r, "precision": p, "f1": 2 * p * r / (p + r) if p + r else 0.0,
        "ndcg": dcg / idcg, "mrr": 0.0 if first is None else 1 / (first + 1), "map": ap / min(len(relevant), k),
    }


def random_world(seed: int, n_users: int, n_items: int, max_hist: int, max_targets: int):
    """A distinct-score table, histories and targets. Targets avoid the history, may repeat an item."""
    rng = np.random.default_rng(seed)
    table = np.stack([rng.permutation(n_items + 1) for _ in range(n_users + 1)]).astype(np.float32)
    hist_pairs, target_pairs = [], []
    hist_sets: dict[int, set[int]] = {}
    target_sets: dict[int, set[int]] = {}
    for user in range(1, n_users + 1):
        items = rng.permutation(np.arange(1, n_items + 1))
        n_hist = int(rng.integers(0, max_hist + 1))
        n_tgt = int(rng.integers(0, max_targets + 1))
        hist, tgt = items[:n_hist].tolist(), items[n_hist : n_hist + n_tgt].tolist()
        if tgt and rng.random() < 0.3:
            tgt.append(tgt[0])  # a repeated target counts once
        hist_pairs += [(user, i) for i in hist]
        target_pairs += [(user, i) for i in tgt]
        hist_sets[user], target_sets[user] = set(hist), set(tgt)
    if not target_pairs:
        target_pairs, target_sets[1] = [(1, int(items[-1]))], {int(items[-1])}
        # keep the history of user 1 disjoint from its target
        hist_pairs = [(u, i) for u, i in hist_pairs if not (u == 1 and i == int(items[-1]))]
        hist_sets[1].discard(int(items[-1]))
    return table, hist_pairs, target_pairs, hist_sets, target_sets


def expected_per_user(table, hist_sets, target_sets, ks):
    users = sorted(u for u, t in target_sets.items() if t)
    out = {f"{m}@{k}": [] for k in ks for m in ("hr", "recall", "precision", "f1", "ndcg", "mrr", "map")}
    lists = {}
    for user in users:
        ranked = brute_top_k(table, user, hist_sets[user], max(ks))
        lists[user] = ranked
        for k in ks:
            for name, value in ref_metrics(ranked, target_sets[user], k).items():
                out[f"{name}@{k}"].append(value)
    return users, {key: np.array(v) for key, v in out.items()}, lists


# ------------------------------------------------------------------------ full ranking


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 9), batch_size=st.sampled_from([1, 2, 3, 1000]))
def test_full_ranking_matches_brute_force(seed, n_users, batch_size):
    n_items, ks = 15, (1, 3, 5, 8)  # at most 6 history items, so the top 8 are always reachable
    table, hist_pairs, target_pairs, hist_sets, target_sets = random_world(seed, n_users, n_items, 6, 4)
    model = fitted(table, hist_pairs or [(1, 1)])
    result = full_ranking_eval(model, histories(hist_pairs, n_users), histories(target_pairs, n_users),
                               ks=ks, batch_size=batch_size)
    users, expected, lists = expected_per_user(table, hist_sets, target_sets, ks)
    assert result.protocol == "full"
    np.testing.assert_array_equal(result.users, users)
    assert result.notes == []
    for key, values in expected.items():
        np.testing.assert_allclose(result.per_user[key], values, rtol=1e-12, atol=1e-12, err_msg=key)
        assert result[key] == pytest.approx(values.mean(), abs=1e-12)
    for k in ks:
        top = [lists[u][:k] for u in users]
        distinct = {i for row in top for i in row}
        assert result.summary[f"coverage@{k}"] == pytest.approx(len(distinct) / n_items)
        counts = np.sort([sum(row.count(i) for row in top) for i in range(1, n_items + 1)])
        mad = sum(abs(a - b) for a in counts for b in counts)
        assert result.summary[f"gini@{k}"] == pytest.approx(mad / (2 * n_items * counts.sum()), abs=1e-12)


def test_full_ranking_hand_example_with_popularity():
    # item counts in training: item 1 x3, item 2 x2, item 3 x1, item 4 x0 -> popularity order 1, 2, 3, 4
    train = [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 3)]
    model = Popularity().fit(TrainData(frame(train), n_users=3, n_items=4))
    hist = histories([(1, 1), (2, 2)], n_users=3)  # user 1 saw item 1, user 2 saw item 2, user 3 nothing
    tgt = histories([(1, 3), (2, 4), (3, 1), (3, 3)], n_users=3)
    # top-2 lists: user 1 -> [2, 3]; user 2 -> [1, 3]; user 3 -> [1, 2]
    result = full_ranking_eval(model, hist, tgt, ks=(1, 2))
    np.testing.assert_array_equal(result.users, [1, 2, 3])
    np.testing.assert_allclose(result.per_user["hr@2"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(result.per_user["hr@1"], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(result.per_user["mrr@2"], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(result.per_user["recall@2"], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(result.per_user["ndcg@2"], [1 / math.log2(3), 0.0, 1 / (1 + 1 / math.log2(3))])
    np.testing.assert_allclose(result.per_user["map@2"], [0.5, 0.0, 0.5])
    assert result["coverage@2"] == pytest.approx(3 / 4)
    assert result["coverage@1"] == pytest.approx(2 / 4)


def test_batch_size_does_not_change_results():
    table, hist_pairs, target_pairs, _, _ = random_world(3, n_users=25, n_items=30, max_hist=8, max_targets=3)
    model = fitted(table, hist_pairs)
    hist, tgt = histories(hist_pairs, 25), histories(target_pairs, 25)
    counts = np.bincount([i for _, i in hist_pairs], minlength=31).astype(np.float64)
    vectors = np.random.default_rng(0).normal(size=(31, 4))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    results = [full_ranking_eval(model, hist, tgt, ks=(5, 10), batch_size=b, item_users=counts, item_vectors=vectors)
               for b in (1, 4, 7, 1000)]
    base = results[0]
    assert len(base.users) > 1
    for other in results[1:]:
        np.testing.assert_array_equal(other.users, base.users)
        assert other.per_user.keys() == base.per_user.keys()
        for key in base.per_user:
            np.testing.assert_allclose(other.per_user[key], base.per_user[key], rtol=0, atol=1e-12, err_msg=key)
        assert other.summary == pytest.approx(base.summary, abs=1e-12)


def test_history_items_never_recommended():
    # the model likes history items best; masked, they must not appear, so each target (the best
    # unseen item) sits at rank 1, and novelty/ILD (functions of the listed items) match brute force
    n_users, n_items, k = 6, 12, 5
    rng = np.random.default_rng(1)
    table = np.zeros((n_users + 1, n_items + 1), dtype=np.float32)
    hist_pairs, target_pairs, lists = [], [], {}
    for user in range(1, n_users + 1):
        order = rng.permutation(np.arange(1, n_items + 1))
        table[user, order] = np.arange(n_items, 0, -1)  # order[0] is the best item
        hist = order[: 1 + user % 4].tolist()
        hist_pairs += [(user, i) for i in hist]
        lists[user] = order[len(hist) : len(hist) + k].tolist()
        target_pairs.append((user, lists[user][0]))
    counts = rng.integers(1, n_users + 1, n_items + 1).astype(np.float64)
    vectors = rng.normal(size=(n_items + 1, 3))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    result = full_ranking_eval(fitted(table, hist_pairs), histories(hist_pairs, n_users),
                               histories(target_pairs, n_users), ks=(k,), item_users=counts, item_vectors=vectors)
    np.testing.assert_allclose(result.per_user[f"mrr@{k}"], np.ones(n_users))
    for row, user in enumerate(result.users):
        ranked = lists[int(user)]
        assert not set(ranked) & {i for u, i in hist_pairs if u == user}
        novelty = sum(-math.log2(counts[i] / n_users) for i in ranked) / k
        assert result.per_user[f"novelty@{k}"][row] == pytest.approx(novelty, rel=1e-9)
        cosines = [float(vectors[a] @ vectors[b]) for x, a in enumerate(ranked) for b in ranked[x + 1 :]]
        assert result.per_user[f"ild@{k}"][row] == pytest.approx(1 - sum(cosines) / len(cosines), abs=1e-9)


def test_target_in_history_is_noted_as_unreachable():
    n_users, n_items = 3, 10
    table = np.tile(np.arange(n_items + 1, dtype=np.float32)[::-1], (n_users + 1, 1))  # item 1 best
    hist_pairs = [(1, 1), (1, 2), (2, 5), (3, 1)]
    # user 1: target 1 is in its history (and would otherwise be ranked first); user 3: target 1 also
    target_pairs = [(1, 1), (2, 1), (3, 1), (3, 2)]
    result = full_ranking_eval(fitted(table, hist_pairs), histories(hist_pairs, n_users),
                               histories(target_pairs, n_users), ks=(1, 3))
    assert result.notes == ["2 target(s) were in the user's history and masked"]
    np.testing.assert_allclose(result.per_user["hr@3"], [0.0, 1.0, 1.0])
    np.testing.assert_allclose(result.per_user["recall@3"], [0.0, 1.0, 0.5])  # unreachable still counts as relevant
    np.testing.assert_allclose(result.per_user["mrr@3"], [0.0, 1.0, 1.0])


def test_no_note_without_unreachable_targets():
    table = np.tile(np.arange(6, dtype=np.float32), (3, 1))
    result = full_ranking_eval(fitted(table, [(1, 1)]), histories([(1, 1)], 2), histories([(1, 2), (2, 1)], 2), ks=(2,))
    assert result.notes == []


def test_users_without_targets_are_skipped_and_none_raises():
    table = np.tile(np.arange(6, dtype=np.float32), (4, 1))
    model = fitted(table, [(1, 1)])
    hist = histories([(1, 1), (3, 2)], 3)
    result = full_ranking_eval(model, hist, histories([(2, 3)], 3), ks=(2,))
    np.testing.assert_array_equal(result.users, [2])
    with pytest.raises(ValueError):
        full_ranking_eval(model, hist, histories([], 3), ks=(2,))


def test_masked_target_is_never_a_hit_even_when_k_exceeds_the_catalogue():
    # 4 items, user saw items 1 and 2, target 1 is in the history: it can never be recommended
    table = np.array([[0, 0, 0, 0, 0], [0, 9, 8, 1, 2]], dtype=np.float32)
    hist_pairs = [(1, 1), (1, 2)]
    result = full_ranking_eval(fitted(table, hist_pairs), histories(hist_pairs, 1), histories([(1, 1)], 1), ks=(5,))
    assert result.per_user["hr@5"][0] == 0.0


def test_coverage_counts_only_recommendable_items_when_k_exceeds_the_catalogue():
    table = np.array([[0, 0, 0, 0, 0], [0, 9, 8, 1, 2]], dtype=np.float32)
    hist_pairs = [(1, 1), (1, 2)]
    result = full_ranking_eval(fitted(table, hist_pairs), histories(hist_pairs, 1), histories([(1, 3)], 1), ks=(5,))
    assert result["coverage@5"] == pytest.approx(2 / 4)  # only items 3 and 4 can be listed


# ------------------------------------------------------------------------ sampled ranking


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20), popularity=st.booleans())
def test_sample_negatives_avoids_history_and_target(seed, n, popularity):
    n_users, n_items = 5, 30
    rng = np.random.default_rng(seed)
    hist_pairs, targets = [], []
    for user in range(1, n_users + 1):
        items = rng.permutation(np.arange(1, n_items + 1))
        hist_pairs += [(user, int(i)) for i in items[: rng.integers(0, 9)]]
        targets.append(int(items[-1]))
    probabilities = None
    if popularity:
        weights = rng.random(n_items) ** 4 + 1e-12  # skewed towards a few items, maybe seen ones
        probabilities = weights / weights.sum()
    hist = histories(hist_pairs, n_users)
    users = np.arange(1, n_users + 1)
    out = sample_negatives(hist, users, np.array(targets), n_items, n, probabilities, np.random.default_rng(seed))
    assert out.shape == (n_users, n)
    for row, user in enumerate(users):
        seen = {i for u, i in hist_pairs if u == user}
        negatives = out[row].tolist()
        assert len(set(negatives)) == n
        assert all(1 <= i <= n_items for i in negatives)
        assert not set(negatives) & seen
        assert targets[row] not in negatives


def test_sample_negatives_is_seeded_and_raises_when_too_few_unseen():
    hist = histories([(1, 1), (1, 2), (1, 3)], 1)
    a = sample_negatives(hist, np.array([1]), np.array([4]), 10, 5, None, np.random.default_rng(7))
    b = sample_negatives(hist, np.array([1]), np.array([4]), 10, 5, None, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    # 10 items - 3 seen - 1 target = 6 unseen: 6 is possible (all of them), 7 is not
    all_six = sample_negatives(hist, np.array([1]), np.array([4]), 10, 6, None, np.random.default_rng(0))
    assert sorted(all_six[0].tolist()) == [5, 6, 7, 8, 9, 10]
    with pytest.raises(ValueError):
        sample_negatives(hist, np.array([1]), np.array([4]), 10, 7, None, np.random.default_rng(0))


def _sampled_world(n_users: int = 8, n_items: int = 130, seed: int = 5):
    rng = np.random.default_rng(seed)
    table = np.stack([rng.permutation(n_items + 1) for _ in range(n_users + 1)]).astype(np.float32)
    hist_pairs, target_pairs = [], []
    for user in range(1, n_users + 1):
        items = rng.permutation(np.arange(1, n_items + 1))
        hist_pairs += [(user, int(i)) for i in items[: rng.integers(1, 20)]]
        if user != 4:  # user 4 has no target and is skipped
            target_pairs.append((user, int(items[-1])))
    return table, hist_pairs, target_pairs


def test_sampled_eval_matches_brute_force_and_is_labelled():
    n_users, n_items = 8, 130
    table, hist_pairs, target_pairs = _sampled_world(n_users, n_items)
    hist, tgt = histories(hist_pairs, n_users), histories(target_pairs, n_users)
    result = sampled_ranking_eval(fitted(table, hist_pairs), hist, tgt, ks=(1, 10, 50), seed=3, batch_size=3)
    assert result.protocol == "sampled-99-uniform"
    users = np.array([u for u, _ in target_pairs])
    np.testing.assert_array_equal(result.users, users)
    target_items = np.array([i for _, i in target_pairs])
    negatives = sample_negatives(hist, users, target_items, n_items, 99, None, np.random.default_rng(3))
    for row, user in enumerate(users):
        target_score = table[user, target_items[row]]
        rank = sum(1 for i in negatives[row] if table[user, i] >= target_score)  # 0-based, ties against
        for k in (1, 10, 50):
            assert result.per_user[f"hr@{k}"][row] == float(rank < k)
            assert result.per_user[f"ndcg@{k}"][row] == pytest.approx(1 / math.log2(rank + 2) if rank < k else 0.0)
            assert result.per_user[f"mrr@{k}"][row] == pytest.approx(1 / (rank + 1) if rank < k else 0.0)
    # hand-check: some users hit at 50 and some miss at 1, so the comparison above is not vacuous
    assert 0 < result["hr@50"] and result["hr@1"] < 1


def test_sampled_eval_orders_ties_at_random():
    # every item scores the same: the target's rank among 1 + 99 candidates is uniform, so over many
    # users hr@10 is near 10 / 100, far from both 0 (ties against) and 1 (ties for the target)
    n_users, n_items = 400, 110
    table = np.ones((n_users + 1, n_items + 1), dtype=np.float32)
    hist_pairs = [(u, 1) for u in range(1, n_users + 1)]
    targets = [(u, 2) for u in range(1, n_users + 1)]
    result = sampled_ranking_eval(fitted(table, hist_pairs), histories(hist_pairs, n_users),
                                  histories(targets, n_users), ks=(10,))
    assert 0.05 < result["hr@10"] < 0.15


def test_sampled_eval_popularity_label_and_argument_checks():
    n_users, n_items = 8, 130
    table, hist_pairs, target_pairs = _sampled_world(n_users, n_items)
    model = fitted(table, hist_pairs)
    hist, tgt = histories(hist_pairs, n_users), histories(target_pairs, n_users)
    # every item has a positive count
    counts = np.bincount([i for _, i in hist_pairs], minlength=n_items + 1).astype(np.float64) + 1.0
    result = sampled_ranking_eval(model, hist, tgt, n_negatives=50, sampling="popularity", item_counts=counts)
    assert result.protocol == "sampled-50-popularity"
    assert result.per_user["hr@10"].shape == (len(target_pairs),)
    with pytest.raises(ValueError):
        sampled_ranking_eval(model, hist, tgt, sampling="popularity")  # no item_counts
    with pytest.raises(ValueError):
        sampled_ranking_eval(model, hist, tgt, sampling="stratified")


def test_sampled_eval_rejects_users_with_several_targets():
    n_users, n_items = 8, 130
    table, hist_pairs, target_pairs = _sampled_world(n_users, n_items)
    two_targets = target_pairs + [(2, next(i for i in range(1, n_items + 1) if (2, i) not in hist_pairs + target_pairs))]
    with pytest.raises(ValueError, match="one target"):
        sampled_ranking_eval(fitted(table, hist_pairs), histories(hist_pairs, n_users), histories(two_targets, n_users))


def test_popularity_sampling_terminates_when_few_items_have_counts():
    # 10 items, only 1..3 occur in training; user 1 saw item 1 and its target is item 2, so item 3 is the
    # only unseen item with a count and 7 others have weight 1e-12: drawing 3 negatives must end, with
    # item 3 and two of the barely weighted ones (a weight, however small, makes an item drawable)
    counts = np.array([0, 5, 5, 5, 0, 0, 0, 0, 0, 0, 0], dtype=np.float64)
    weights = counts[1:] + 1e-12
    hist = histories([(1, 1)], 1)
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        out = sample_negatives(hist, np.array([1]), np.array([2]), 10, 3, weights / weights.sum(),
                               np.random.default_rng(0))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    drawn = set(out[0].tolist())
    assert len(drawn) == 3 and 3 in drawn and not drawn & {1, 2}


def test_popularity_sampling_refuses_when_too_few_unseen_items_have_a_weight():
    """Only item 3 is unseen and weighted: 3 negatives cannot be drawn, and the error counts item 3."""
    counts = np.array([0, 5, 5, 5, 0, 0, 0, 0, 0, 0, 0], dtype=np.float64)
    with pytest.raises(ValueError, match="only 1 unseen items have a sampling weight; cannot sample 3"):
        sample_negatives(histories([(1, 1)], 1), np.array([1]), np.array([2]), 10, 3, counts[1:] / counts.sum(),
                         np.random.default_rng(0))


def _raise_timeout(signum, frame):
    raise TimeoutError("sample_negatives did not finish within 0.5 s")


def test_item_vectors_from_matrix_preserves_item_cosines():
    # with dim >= the rank of the item x user matrix the SVD is exact, so cosines of the unit item
    # vectors equal cosines of the items' (row-normalised) user columns
    _, hist_pairs, _ = _sampled_world(8, 130)
    matrix = histories(hist_pairs, 8).to_csr(130)
    vectors = item_vectors_from_matrix(matrix, dim=64)  # clamped to 8 = users + padding - 1
    assert vectors.shape == (131, 8) and vectors.dtype == np.float32
    columns = matrix.T.toarray().astype(np.float64)  # (I + 1, U + 1)
    seen = sorted({i for _, i in hist_pairs})
    unseen = sorted(set(range(131)) - set(seen))
    np.testing.assert_allclose(np.linalg.norm(vectors[seen], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[unseen], 0.0, atol=1e-6)
    for a, b in [(seen[0], seen[1]), (seen[2], seen[5]), (seen[3], seen[-1]), (seen[0], seen[-2])]:
        expected = columns[a] @ columns[b] / (np.linalg.norm(columns[a]) * np.linalg.norm(columns[b]))
        assert float(vectors[a] @ vectors[b]) == pytest.approx(expected, abs=1e-4)


def test_ties_are_broken_at_random_not_by_id():
    """Regression: torch.topk kept tied items in id order, and ids follow popularity, so a model that
    scores every item the same looked far better than chance."""
    from omnirec.data.dataset import Dataset
    from omnirec.data.split import split_dataset
    from omnirec.data.synthetic import SyntheticConfig, generate
    from omnirec.models.popularity import Popularity

    ds = Dataset.from_frames(*generate(SyntheticConfig(n_users=2000, n_items=400, seed=3)))
    split = split_dataset(ds, "loo")
    model = Popularity().fit(split.train_data())
    model.counts = np.ones_like(model.counts)  # every item ties
    result = full_ranking_eval(model, split.histories("test"), split.targets("test"), ks=(10,))
    chance = 10 / (ds.n_items - 17)  # about 17 history items per user are masked
    assert abs(result["hr@10"] - chance) < 4 * np.sqrt(chance * (1 - chance) / 2000)


def test_top_k_pads_and_orders_ties_reproducibly():
    import torch

    from omnirec.topk import top_k

    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 2.0]])
    ids, values = top_k(scores, 8)
    assert ids.shape == (1, 8) and ids[0, 0] == 5 and set(ids[0, 1:5].tolist()) == {1, 2, 3, 4}
    assert ids[0, 6:].tolist() == [0, 0] and torch.isneginf(values[0, 6:]).all()
    assert torch.equal(top_k(scores, 3)[0], top_k(scores, 3)[0])
    orders = {tuple(top_k(scores, 5, seed=s)[0][0].tolist()) for s in range(20)}
    assert len(orders) > 1, "different seeds must be able to order ties differently"


def test_tie_order_of_a_user_does_not_depend_on_the_batch():
    import torch

    from omnirec.topk import top_k

    scores = torch.zeros((3, 50))
    together = top_k(scores, 5, row_keys=torch.tensor([7, 8, 9]))[0]
    alone = top_k(scores[:1], 5, row_keys=torch.tensor([8]))[0]
    assert torch.equal(together[1], alone[0]) and not torch.equal(together[0], together[1])
