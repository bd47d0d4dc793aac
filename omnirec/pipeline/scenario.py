"""Scenarios: one TOML file declares several named final-list recipes (sources, ranker, re-rank rules, k),
built into `Pipeline`s over one trained model and the data it knows.

```toml
[scenarios.home]
k = 10
ranker = "model"                 # "model" (the bundle's model) or "fusion" (reciprocal rank fusion)
fallback = ["popular"]
sources = [{kind = "model", n = 200}, {kind = "cooccurrence", n = 100}, {kind = "popular", n = 50}]
rerank = {diversity = 0.2, blocked = ["item-13"]}

[scenarios.new_user]
ranker = "fusion"
sources = [{kind = "popular", n = 50, half_life = 604800}, {kind = "new_items", n = 20}]
```

>>> scenarios = parse_scenarios({"scenarios": {"home": {"k": 5, "sources": [{"kind": "popular"}]}}})
>>> scenarios["home"].k, scenarios["home"].sources[0].kind
(5, 'popular')
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from omnirec.config import ConfigError, from_dict, load_toml
from omnirec.data.histories import Histories
from omnirec.data.ids import IdMap
from omnirec.features.similarity import cosine_similarity, item_vectors_from_matrix, keep_top_k
from omnirec.models.base import Recommender
from omnirec.pipeline.ann import IndexConfig, VectorIndex
from omnirec.pipeline.pipeline import Pipeline, Rules
from omnirec.pipeline.rank import FusionRanker, ModelRanker
from omnirec.pipeline.rerank import RerankConfig
from omnirec.pipeline.sources import (
    CooccurrenceSource,
    EmbeddingSource,
    ModelSource,
    NewItemSource,
    PopularSource,
    ScoreCache,
    Source,
    decayed_counts,
)

RANKERS = ("model", "fusion")
DIVERSITY_VECTORS = ("interactions", "text", "model")


@dataclass(frozen=True)
class SourceConfig(ABC):
    """What every source takes. n: candidates it proposes; name: how lists and reasons call it (default:
    the kind)."""

    n: int = 100
    name: str = ""
    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if self.n < 1 or getattr(self, "recent", 1) < 1:
            raise ValueError("n and recent must be >= 1")

    @property
    def label(self) -> str:
        return self.name or self.kind

    @abstractmethod
    def build(self, data: PipelineData) -> Source:
        """The source this config describes, over `data`."""


@dataclass(frozen=True)
class ModelSourceConfig(SourceConfig):
    """The model's own top items."""

    kind: ClassVar[str] = "model"

    def build(self, data: PipelineData) -> Source:
        return ModelSource(data.scorer(), name=self.label)


@dataclass(frozen=True)
class CooccurrenceSourceConfig(SourceConfig):
    """Items that co-occur with the user's `recent` most recent items."""

    recent: int = 5
    kind: ClassVar[str] = "cooccurrence"

    def build(self, data: PipelineData) -> Source:
        return CooccurrenceSource(data.similarity(), recent=self.recent, name=self.label)


@dataclass(frozen=True)
class EmbeddingSourceConfig(SourceConfig):
    """Nearest neighbours of the `recent` most recent items in the model's item embedding space."""

    recent: int = 5
    kind: ClassVar[str] = "embedding"
    what: ClassVar[str] = "model"

    def build(self, data: PipelineData) -> Source:
        return EmbeddingSource(data.vectors(self.what), data.index_over(self.what), name=self.label,
                               recent=self.recent, what=self.what)


@dataclass(frozen=True)
class ContentSourceConfig(EmbeddingSourceConfig):
    """Nearest neighbours of the `recent` most recent items by item text."""

    kind: ClassVar[str] = "content"
    what: ClassVar[str] = "text"


@dataclass(frozen=True)
class PopularSourceConfig(SourceConfig):
    """The most popular items. half_life: popularity decay in the data's time unit (0 = plain counts);
    per_category: popular in the categories of the user's `recent` items."""

    recent: int = 5
    half_life: float = 0.0
    per_category: bool = False
    kind: ClassVar[str] = "popular"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.half_life < 0:
            raise ValueError("half_life must be >= 0")

    def build(self, data: PipelineData) -> Source:
        cats = data.categories if self.per_category else None
        if self.per_category and cats is None:
            raise ValueError(f"source {self.label!r}: per_category needs item categories")
        return PopularSource(data.counts(self.half_life), cats, data.category_names, recent=self.recent,
                             half_life=self.half_life, name=self.label)


@dataclass(frozen=True)
class NewItemsSourceConfig(SourceConfig):
    """Items with at most `max_interactions` interactions, nearest by text to the `recent` items."""

    recent: int = 5
    max_interactions: int = 0
    kind: ClassVar[str] = "new_items"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_interactions < 0:
            raise ValueError("max_interactions must be >= 0")

    def build(self, data: PipelineData) -> Source:
        return NewItemSource(data.vectors("text"), data.counts(0.0), self.max_interactions, recent=self.recent,
                             name=self.label)


# The one table where source names become classes; each kind's options are its own dataclass, so an
# option of another kind (half_life on a co-occurrence source) is refused with the keys it does take.
SOURCES: dict[str, type[SourceConfig]] = {c.kind: c for c in (
    ModelSourceConfig, CooccurrenceSourceConfig, EmbeddingSourceConfig, ContentSourceConfig, PopularSourceConfig,
    NewItemsSourceConfig)}
SOURCE_KINDS = tuple(SOURCES)


def source(kind: str, **options: Any) -> SourceConfig:  # noqa: ANN401
    """The config of a source of `kind` with `options`.

    >>> source("popular", n=50, half_life=86400.0).half_life
    86400.0
    >>> source("cooccurrence", half_life=1.0)
    Traceback (most recent call last):
    ...
    omnirec.config.ConfigError: unknown key 'half_life' in a cooccurrence source; known keys: n, name, recent
    """
    if kind not in SOURCES:
        raise ConfigError(f"unknown source kind {kind!r}; known: {', '.join(SOURCE_KINDS)}")
    return from_dict(SOURCES[kind], options, where=f"a {kind} source")


@dataclass(frozen=True)
class ScenarioConfig:
    """One named recipe for a final list."""

    sources: tuple[SourceConfig, ...]
    k: int = 10
    ranker: str = "model"
    fallback: tuple[str, ...] = ("popular",)
    candidates: int = 200
    diversity_vectors: str = "interactions"
    rerank: RerankConfig = field(default_factory=RerankConfig)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("a scenario needs at least one source")
        if self.k < 1 or self.candidates < 1:
            raise ValueError("k and candidates must be >= 1")
        if self.ranker not in RANKERS:
            raise ValueError(f"ranker={self.ranker!r}; expected one of {', '.join(RANKERS)}")
        if self.diversity_vectors not in DIVERSITY_VECTORS:
            raise ValueError(f"diversity_vectors={self.diversity_vectors!r}; expected one of {', '.join(DIVERSITY_VECTORS)}")
        bad = [f for f in self.fallback if f not in ("popular", "new_items")]
        if bad:
            raise ValueError(f"fallback {bad[0]!r}: the fallback chain takes 'popular' and 'new_items'")
        names = [s.label for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"two sources share a name in {names}; give one a `name`")


def parse_scenarios(document: dict[str, Any], where: str = "scenarios") -> dict[str, ScenarioConfig]:
    """Scenario configs from a parsed TOML document (its `[scenarios.<name>]` tables)."""
    unknown = [k for k in document if k != "scenarios"]
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key {unknown[0]!r}; expected [scenarios.<name>] tables")
    tables = document.get("scenarios")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{where}: no [scenarios.<name>] table")
    out = {}
    for name, table in tables.items():
        label = f"{where}: [scenarios.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{label}: expected a table")
        raw_sources = table.get("sources", [])
        if not isinstance(raw_sources, list) or not all(isinstance(s, dict) for s in raw_sources):
            raise ConfigError(f"{label}.sources: expected a list of tables like {{kind = \"model\", n = 200}}")
        sources = tuple(_parse_source(s, f"{label}.sources[{i}]") for i, s in enumerate(raw_sources))
        rest = {k: v for k, v in table.items() if k != "sources"}
        out[name] = from_dict(ScenarioConfig, {**rest, "sources": sources}, where=label)
    return out


def _parse_source(table: dict[str, Any], where: str) -> SourceConfig:
    """One `{kind = ..., ...}` table: its kind picks the config class, which checks the other keys."""
    kind = table.get("kind")
    if kind not in SOURCES:
        raise ConfigError(f"{where}: unknown source kind {kind!r}; known: {', '.join(SOURCE_KINDS)}")
    return from_dict(SOURCES[kind], {k: v for k, v in table.items() if k != "kind"}, where=f"{where} ({kind})")


def load_scenarios(path: str) -> dict[str, ScenarioConfig]:
    """Read a scenarios TOML file."""
    return parse_scenarios(load_toml(path), where=str(path))


@dataclass
class PipelineData:
    """What sources are built from: the model, every user's history (with times) and optional item data.

    text_vectors: (I + 1, D) text embeddings; categories: (I + 1,) category id per item (0 = none) with
    their names; names: what a reason calls an item (default: its external id)."""

    model: Recommender
    histories: Histories
    items: IdMap
    text_vectors: np.ndarray | None = None
    categories: np.ndarray | None = None
    category_names: list[str] | None = None
    names: list[str] | None = None
    index: IndexConfig = field(default_factory=IndexConfig)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def cached(self, key: str, make: Any) -> Any:  # noqa: ANN401 - whatever `make` builds
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def matrix(self) -> sp.csr_matrix:
        return self.cached("matrix", lambda: self.histories.to_csr(self.n_items))

    def similarity(self) -> sp.csr_matrix:
        return self.cached("similarity", lambda: keep_top_k(cosine_similarity(self.matrix(), shrink=10.0), 100))

    def counts(self, half_life: float) -> np.ndarray:
        return self.cached(f"counts:{half_life}", lambda: decayed_counts(self.histories.items, self.histories.times,
                                                                          self.n_items, half_life))

    def vectors(self, what: str) -> np.ndarray:
        """(I + 1, D) unit item vectors: "interactions" (SVD of the user x item matrix), "text", "model"."""
        if what == "interactions":
            return self.cached("v:interactions", lambda: item_vectors_from_matrix(self.matrix()))
        if what == "text":
            if self.text_vectors is None:
                raise ValueError("this source needs item text embeddings, and none were given")
            return self.cached("v:text", lambda: _unit(self.text_vectors))
        vectors = self.model.item_embeddings  # raises, naming the models that have them, where this one has none
        if not self.model.has_item_embeddings:
            vectors()
        return self.cached("v:model", lambda: _unit(np.asarray(vectors(), dtype=np.float32)))

    def index_over(self, what: str) -> VectorIndex:
        vectors = self.vectors(what)
        return self.cached(f"index:{what}", lambda: VectorIndex(vectors[1:], ids=np.arange(1, len(vectors)), config=self.index))

    def scorer(self) -> ScoreCache:
        """The model behind a score cache shared by the sources and rankers built from this data."""
        return self.cached("scorer", lambda: ScoreCache(self.model))

    def name_of(self, item: int) -> str:
        return self.names[item] if self.names is not None else self.items.decode([item])[0]


def _unit(vectors: np.ndarray) -> np.ndarray:
    out = normalize(np.asarray(vectors, dtype=np.float32)).astype(np.float32)
    out[0] = 0.0
    return out


def resolve_rules(rerank: RerankConfig, items: IdMap) -> Rules:
    """The rules of a re-rank config with external item ids turned into dense ids (unknown ids raise)."""
    def dense(labels: tuple[str, ...] | list[str], what: str) -> list[int]:
        missing = [label for label in labels if label not in items]
        if missing:
            raise ValueError(f"rerank.{what}: item {missing[0]!r} is not in the catalogue")
        return [int(i) for i in items.encode(list(labels))] if labels else []
    pins = dict(zip(dense(list(rerank.pins), "pins"), rerank.pins.values(), strict=True))
    return Rules(frozenset(dense(rerank.blocked, "blocked") + dense(rerank.out_of_stock, "out_of_stock")),
                 frozenset(dense(rerank.boost_items, "boost_items")), pins)


def build_pipeline(scenario: ScenarioConfig, data: PipelineData) -> Pipeline:
    """The pipeline a scenario describes, over `data`."""
    sources = {s.label: s.build(data) for s in scenario.sources}
    fallback = {name: source(name, n=scenario.k).build(data) for name in scenario.fallback}
    ranker = ModelRanker(data.scorer()) if scenario.ranker == "model" else FusionRanker()
    vectors = data.vectors(scenario.diversity_vectors) if scenario.rerank.diversity > 0 else None
    first_seen = None
    if scenario.rerank.freshness:
        first_seen = _first_seen(data.histories, data.n_items)
    now = float(data.histories.times.max()) if data.histories.times is not None and len(data.histories.times) else 0.0
    return Pipeline(sources, data.n_items, ranker, scenario.rerank, fallback, scenario.candidates, vectors,
                    data.categories, first_seen, now, resolve_rules(scenario.rerank, data.items), data.name_of,
                    sizes={s.label: s.n for s in scenario.sources})


def reads_text(scenario: ScenarioConfig) -> bool:
    """Whether the scenario needs item text vectors (content or new-item sources, text diversity)."""
    kinds = {s.kind for s in scenario.sources} | set(scenario.fallback)
    return bool(kinds & {"content", "new_items"}) or scenario.diversity_vectors == "text"


def bundle_text_vectors(bundle: Any, scenarios: list[ScenarioConfig]) -> np.ndarray | None:  # noqa: ANN401 - a Bundle
    """Item text vectors for pipelines over `bundle`: a textseq model's own, else the bundle's item text
    through the default sentence encoder (cached on disk after the first time) when a scenario reads text;
    None when none does."""
    own = bundle.model.text_vectors()  # a model that reads text (textseq) keeps its items' vectors
    if own is not None:
        return own
    if not any(reads_text(s) for s in scenarios):
        return None
    if bundle.item_text is None:
        raise ValueError("a scenario has content or new_items sources, and the bundle has no item text "
                         "(train on data with item text)")
    from omnirec.features.text import TextEncoderConfig, encode_texts

    return encode_texts(bundle.item_text, TextEncoderConfig(progress=False))


def bundle_pipeline_data(bundle: Any, scenarios: list[ScenarioConfig]) -> PipelineData:  # noqa: ANN401 - a Bundle
    """What pipelines over `bundle` are built from; reasons name items by their titles where the catalogue
    has them (else by their ids)."""
    names = None
    if bundle.item_titles is not None:
        labels = ["", *bundle.items.labels]
        names = [title or label for title, label in zip(bundle.item_titles, labels, strict=True)]
    return PipelineData(bundle.model, bundle.histories, bundle.items,
                        text_vectors=bundle_text_vectors(bundle, scenarios), names=names)


def _first_seen(histories: Histories, n_items: int) -> np.ndarray:
    if histories.times is None:
        raise ValueError("freshness needs interaction times, and these histories have none")
    first = np.full(n_items + 1, np.inf)
    np.minimum.at(first, histories.items, histories.times.astype(np.float64))
    return first

