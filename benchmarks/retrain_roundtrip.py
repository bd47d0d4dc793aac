"""Does a retrain keep what the first training read? Two-tower with user attributes on `ml-100k`, the
cold-users protocol of `deep_cf.py` (10% of users held out of training, split seed 0): test NDCG@10 on
the held-out users, who are known only by their attributes, for

- `first`: the dataset as read from the files;
- `retrained`: the dataset a `retrain --bundle` builds from the saved bundle and an empty event store
  (`Bundle.dataset()` then `with_feedback`), which must give the same figure;
- `retrained, attributes lost`: the same without the user attributes, as `retrain` built it before the
  bundle kept them (the figure the fix protects).

    python benchmarks/retrain_roundtrip.py --data-dir ../shared/data

Writes benchmarks/results/retrain_roundtrip.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from baselines import code_version, machine  # noqa: E402
from protocol import SEEDS, mean_std, seeded  # noqa: E402

from omnirec.auto import build  # noqa: E402
from omnirec.data.datasets import load_dataset  # noqa: E402
from omnirec.data.split import split_dataset  # noqa: E402
from omnirec.evaluate.ranking import full_ranking_eval  # noqa: E402
from omnirec.experiment import fit_for_test  # noqa: E402
from omnirec.run import RunConfig, train_bundle  # noqa: E402
from omnirec.serve.retrain import with_feedback  # noqa: E402
from omnirec.serve.store import open_store  # noqa: E402
from omnirec.utils import atomic_write_text  # noqa: E402

OUT = HERE / "results" / "retrain_roundtrip.json"


def cold_ndcg(dataset, seed: int, attributes: bool = True) -> float:  # noqa: ANN001 - a Dataset
    """Two-tower (seed `seed`) fitted for the test on the cold-users split; NDCG@10 of the held-out users."""
    split = split_dataset(dataset, "cold-users", user_frac=0.1, seed=0)
    model = build("twotower", seeded("twotower", {"train": {"progress": False}}, seed))
    fit_for_test(model, split, dataset.item_text, dataset.user_attributes if attributes else None)
    cold = split.targets("test").only_users(split.cold_users)
    return full_ranking_eval(model, split.histories("test"), cold, ks=(10,))["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    first = load_dataset("ml-100k", args.data_dir)
    run = RunConfig("pop", data=dataclasses.replace(RunConfig("pop").data, dataset="ml-100k", data_dir=args.data_dir))
    with tempfile.TemporaryDirectory() as folder:  # the bundle round trip itself: save, load, rebuild
        bundle, _ = train_bundle(run, dataset=first, progress=False)
        bundle.save(f"{folder}/bundle")
        store = open_store(f"{folder}/events.db")
        retrained, summary = with_feedback(type(bundle).load(f"{folder}/bundle").dataset(), store)
        store.close()
    lost = dataclasses.replace(retrained, user_attributes=None)
    figures = {name: [cold_ndcg(data, seed) for seed in seeds]
               for name, data in (("first", first), ("retrained", retrained), ("retrained, attributes lost", lost))}
    doc = {"command": "python benchmarks/retrain_roundtrip.py --data-dir ../shared/data", "code": code_version(__file__),
           "machine": machine(), "seeds": list(seeds), "retrain": summary,
           "users": [first.n_users, retrained.n_users], "interactions": [first.interactions.height, retrained.interactions.height],
           "cold_ndcg@10": {name: mean_std(values) for name, values in figures.items()}}
    atomic_write_text(OUT, json.dumps(doc, indent=2))
    for name, values in figures.items():
        print(f"{name}: cold-user NDCG@10 {mean_std(values)}")


if __name__ == "__main__":
    main()
