"""Models behind one contract (see `base.Recommender`). `MODELS` is the one place names map to classes."""

from omnirec.models.base import Recommender
from omnirec.models.content import TfidfContent
from omnirec.models.ease import EASE
from omnirec.models.gru4rec import GRU4Rec
from omnirec.models.hstu import HSTU
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
    "ease": EASE,
    "twotower": TwoTower,
    "neumf": NeuMF,
    "lightgcn": LightGCN,
}

__all__ = ["MODELS", "Recommender", "Popularity", "ItemKNN", "ALS", "BPR", "Markov", "TfidfContent", "SASRec", "HSTU", "GRU4Rec", "TextSeq", "EASE",
           "TwoTower", "NeuMF", "LightGCN"]
