"""Models behind one contract (see `base.Recommender`). `MODELS` is the one place names map to classes."""

from typing import Any

from omnirec.config import ConfigError, from_dict
from omnirec.data.dataset import Dataset
from omnirec.models.base import Recommender
from omnirec.models.content import TfidfContent
from omnirec.models.ease import EASE
from omnirec.models.gru4rec import GRU4Rec
from omnirec.models.hstu import HSTU
from omnirec.models.hybrid import Hybrid
from omnirec.models.itemknn import ItemKNN
from omnirec.models.lightgcn import LightGCN
from omnirec.models.markov import Markov
from omnirec.models.mf import ALS, BPR
from omnirec.models.neumf import NeuMF
from omnirec.models.popularity import Popularity
from omnirec.models.sasrec import SASRec
from omnirec.models.textseq import TextSeq
from omnirec.models.twotower import TwoTower

MODELS: dict[str, type[Recommender]] = {
    "pop": Popularity,
    "itemknn": ItemKNN,
    "als": ALS,
    "bpr": BPR,
    "markov": Markov,
    "tfidf": TfidfContent,
    "sasrec": SASRec,
    "hstu": HSTU,
    "gru4rec": GRU4Rec,
    "textseq": TextSeq,
    "hybrid": Hybrid,
    "ease": EASE,
    "twotower": TwoTower,
    "neumf": NeuMF,
    "lightgcn": LightGCN,
}

def build_models(names: list[str], settings: dict[str, Any], dataset: Dataset) -> dict[str, Recommender]:
    """Models by name, each with its `[models.<name>]` settings; names are checked before anything runs."""
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ConfigError(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    extra = [n for n in settings if n not in MODELS]
    if extra:
        raise ConfigError(f"config has [models.{extra[0]}], which is not a model; known: {', '.join(MODELS)}")
    for name in names:
        if MODELS[name].needs_text and dataset.item_text is None:
            raise ValueError(f"model {name!r} needs item text, and dataset {dataset.name!r} has none")
    models = {}
    for name in names:
        cls = MODELS[name]
        models[name] = cls(from_dict(cls.Config, settings.get(name, {}), where=f"[models.{name}]"))
    return models


__all__ = ["build_models", "MODELS", "Recommender", "Popularity", "ItemKNN", "ALS", "BPR", "Markov", "TfidfContent", "SASRec", "HSTU", "GRU4Rec", "TextSeq", "Hybrid", "EASE",
           "TwoTower", "NeuMF", "LightGCN"]
