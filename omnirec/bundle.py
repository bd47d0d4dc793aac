"""A trained model with everything needed to use it: id maps, the users' histories, its config and
metrics. A bundle loads back and gives identical scores; it is written to a temporary folder and renamed,
so a crash never leaves half a bundle.

>>> import tempfile
>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.models.popularity import Popularity
>>> ds = Dataset.from_frames(*generate(SyntheticConfig(n_users=30, n_items=20)))
>>> from omnirec.data.split import split_dataset
>>> model = Popularity().fit(split_dataset(ds).train_data())
>>> folder = tempfile.mkdtemp() + "/bundle"
>>> Bundle.create(model, ds).save(folder)
>>> [label for label, _ in Bundle.load(folder).recommend(ds.users.labels[0], k=3)].__len__()
3
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from omnirec.config import config_hash, to_dict
from omnirec.data.attributes import Attributes
from omnirec.data.clean import CleanReport
from omnirec.data.dataset import Dataset
from omnirec.data.histories import Histories, UserBatch
from omnirec.data.ids import IdMap, UnknownIdError
from omnirec.data.schema import ITEM, TIME, USER
from omnirec.models.base import Recommender
from omnirec.utils import atomic_savez, atomic_write_text, file_sha256

FORMAT = "omnirec.bundle/1"


def bundle_folder(path: str | Path) -> Path:
    """`path` as an absolute folder, checked to hold a bundle (a clear error naming it otherwise)."""
    folder = Path(path)
    if not (folder / "bundle.json").exists():
        raise ValueError(f"{path}: not a bundle folder (no bundle.json); write one with `omnirec train`")
    return folder.resolve()


@dataclass
class Bundle:
    """model + id maps + histories (every known interaction of each user, time order) + metadata, and the
    items' text where the dataset has it (content sources of the final-list pipeline read it)."""

    model: Recommender
    users: IdMap
    items: IdMap
    histories: Histories
    meta: dict[str, Any] = field(default_factory=dict)
    item_text: list[str] | None = None  # by dense id; index 0 is padding
    item_titles: list[str] | None = None  # by dense id, what a person reads ('' where the catalogue has none)
    user_attributes: Attributes | None = None  # by dense user id, what the run read of its users

    @classmethod
    def create(cls, model: Recommender, dataset: Dataset, metrics: dict[str, float] | None = None,
               extra: dict[str, Any] | None = None) -> Bundle:
        """Bundle a fitted model with the dataset it was trained on (all its interactions become histories)."""
        meta = {"dataset": dataset.name, "n_users": dataset.n_users, "n_items": dataset.n_items,
                "metrics": metrics or {}, **(extra or {})}
        return cls(model, dataset.users, dataset.items, Histories.from_frame(dataset.interactions, dataset.n_users), meta,
                   dataset.item_text, dataset.item_titles, dataset.user_attributes)

    def dataset(self) -> Dataset:
        """The data the bundle was trained from, as the run read it (interactions in time order, item text
        and titles, user attributes): what `retrain` starts from."""
        h = self.histories
        users = np.repeat(np.arange(len(h.indptr) - 1), h.lengths())
        times = h.times if h.times is not None else np.arange(len(h.items))
        frame = pl.DataFrame({USER: users, ITEM: h.items, TIME: times}).cast({USER: pl.Int64, ITEM: pl.Int64, TIME: pl.Int64})
        report = CleanReport(len(h.items), rows_out=len(h.items))  # cleaned when the run read it
        return Dataset(self.meta.get("dataset", "bundle"), frame, self.users, self.items, self.item_text, report,
                       self.user_attributes, self.item_titles)

    def with_items(self, items: list[tuple[str, str, str | None]]) -> Bundle:
        """A copy whose catalogue also holds `items` (id, text, title), scored by a copy of the model
        (`Recommender.add_items`, which refuses for a model that cannot take them); the bundle itself is left
        as it is, so requests under way keep it."""
        fresh = [(item, text, title) for item, text, title in items if item not in self.items]
        if not fresh:
            return self
        model = copy.deepcopy(self.model)
        model.add_items([text for _, text, _ in fresh])
        labels = IdMap([*self.items.labels, *(item for item, _, _ in fresh)])
        text = [*(self.item_text or [""] * (len(self.items) + 1)), *(t for _, t, _ in fresh)]
        titles = self.item_titles
        if titles is not None or any(title for _, _, title in fresh):
            titles = [*(titles or [""] * (len(self.items) + 1)), *(title or "" for _, _, title in fresh)]
        meta = {**self.meta, "n_items": len(labels), "added_items": self.meta.get("added_items", 0) + len(fresh)}
        return dataclasses.replace(self, model=model, items=labels, meta=meta, item_text=text, item_titles=titles)

    def title(self, item: int) -> str | None:
        """The title of dense item `item` (None where the catalogue gives none)."""
        return (self.item_titles[item] or None) if self.item_titles is not None and 0 < item < len(self.item_titles) else None

    def titles(self, items: list[int]) -> list[str | None]:
        """Titles of several dense items."""
        return [self.title(int(i)) for i in items]

    def save(self, path: str | Path) -> None:
        """Write the bundle folder `path`, replacing an existing one only once the new one is complete."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        try:
            self._write(tmp)
            if not path.exists():
                tmp.rename(path)
                return
            old = path.with_name(f".{path.name}.old.{time.time_ns()}")
            path.rename(old)
            try:
                tmp.rename(path)
            except BaseException:
                old.rename(path)  # put the previous bundle back
                raise
            shutil.rmtree(old)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _write(self, folder: Path) -> None:
        self.model.save(folder / "model")
        self.users.save(folder / "users.json")
        self.items.save(folder / "items.json")
        arrays = {"indptr": self.histories.indptr, "items": self.histories.items}
        if self.histories.times is not None:
            arrays["times"] = self.histories.times
        atomic_savez(folder / "histories.npz", arrays)
        files = ["model/model.json", "model/state.npz", "users.json", "items.json", "histories.npz"]
        if self.item_text is not None:
            atomic_write_text(folder / "item_text.json", json.dumps(self.item_text))
            files.append("item_text.json")
        if self.item_titles is not None:
            atomic_write_text(folder / "item_titles.json", json.dumps(self.item_titles))
            files.append("item_titles.json")
        if self.user_attributes is not None:
            atomic_savez(folder / "user_attributes.npz", self.user_attributes.to_state("users"))
            files.append("user_attributes.npz")
        document = {
            "format": FORMAT, "model": self.model.name, "config": to_dict(self.model.config),
            "config_hash": config_hash(self.model.config), **self.meta,
            "sha256": {name: file_sha256(folder / name) for name in files},
        }
        atomic_write_text(folder / "bundle.json", json.dumps(document, indent=2))

    @classmethod
    def load(cls, path: str | Path, models: dict[str, type[Recommender]] | None = None) -> Bundle:
        """Read a bundle folder; every file is checked against the checksum recorded at save."""
        if models is None:
            from omnirec.models import MODELS as models
        path = Path(path)
        if not (path / "bundle.json").exists():
            raise FileNotFoundError(f"{path}: not a bundle (no bundle.json)")
        try:
            document = json.loads((path / "bundle.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}/bundle.json: not valid JSON ({exc}); the bundle is torn, write it again") from exc
        if document.get("format") != FORMAT:
            raise ValueError(f"{path}/bundle.json: format {document.get('format')!r}, expected {FORMAT!r}")
        for name, digest in document["sha256"].items():
            if file_sha256(path / name) != digest:
                raise ValueError(f"{path}/{name}: checksum differs from bundle.json (file changed or torn)")
        if document["model"] not in models:
            raise ValueError(f"{path}: model {document['model']!r} is not known; known: {', '.join(models)}")
        model = models[document["model"]].load(path / "model")
        with np.load(path / "histories.npz", allow_pickle=False) as npz:
            histories = Histories(npz["indptr"], npz["items"], npz["times"] if "times" in npz.files else None)
        meta = {k: v for k, v in document.items() if k not in ("format", "model", "config", "config_hash", "sha256")}
        text, titles = (json.loads((path / f"{name}.json").read_text()) if f"{name}.json" in document["sha256"] else None
                        for name in ("item_text", "item_titles"))
        attributes = None
        if "user_attributes.npz" in document["sha256"]:
            with np.load(path / "user_attributes.npz", allow_pickle=False) as npz:
                attributes = Attributes.from_state("users", {k: npz[k] for k in npz.files})
        return cls(model, IdMap.load(path / "users.json"), IdMap.load(path / "items.json"), histories, meta, text, titles,
                   attributes)

    def recommend(
        self, user: str | None, k: int = 10, exclude_seen: bool = True, query: str | None = None,
        query_weight: float = 0.5,
    ) -> list[tuple[str, float]]:
        """Top-k (item label, score) for a known user label, from the user's full history. With `query`
        (models that read text: textseq), the request's words are blended in; `user=None` with a query
        is an anonymous request: semantic search over the catalogue."""
        if user is None:
            if query is None:
                raise ValueError("give a user, a query, or both")
            batch = UserBatch.request()
        else:
            if user not in self.users:
                raise UnknownIdError(f"user {user!r} is not in this bundle ({len(self.users):,} users)")
            batch = self.histories.batch(np.array(self.users.encode([user])))
        ids, scores = self.model.recommend(batch, k=k, exclude_seen=exclude_seen, query=query, query_weight=query_weight)
        keep = ids[0] != 0
        return list(zip(self.items.decode(ids[0][keep]), scores[0][keep].tolist(), strict=True))
