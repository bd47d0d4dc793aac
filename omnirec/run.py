"""A run: one frozen config (data, cleaning, model, its settings, the cut-offs, the output folder) that
`train`, `retrain`, `auto` and `evaluate` all build, and the one way to train a bundle from it.

The bundle stores the run config (`bundle.json`: `run`, `run_hash`) and everything the run read
(interactions, item text and titles, user attributes), so `retrain` needs only the bundle and the
event store, and the model it trains reads what the first one read.

It lives at the experiment layer, not in `config.py`: it names a data source and a model, which sit
above the config layer.

>>> run = RunConfig.from_dict({"model": "pop", "data": {"dataset": "ml-100k", "data_dir": "data"}})
>>> run.model, run.k, run.data.dataset
('pop', (10, 20), 'ml-100k')
>>> RunConfig.from_dict({"model": "pop", "epochs": 3})
Traceback (most recent call last):
...
omnirec.config.ConfigError: unknown key 'epochs' in the run config; known keys: model, out, k, data, clean, models
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omnirec.bundle import Bundle
from omnirec.config import ConfigError, config_hash, from_dict, load_toml, to_dict
from omnirec.data.clean import CleanConfig
from omnirec.data.dataset import Dataset
from omnirec.data.datasets import DataConfig, load_data
from omnirec.data.split import Split
from omnirec.experiment import ExperimentReport, run_experiment
from omnirec.models import MODELS
from omnirec.models.base import Recommender


@dataclass(frozen=True)
class RunConfig:
    """model: its name in `MODELS`; models: `[models.<name>]` tables of settings (only the run's model's
    is used; the others are checked and kept, so one file can hold several); k: the evaluation cut-offs;
    out: the bundle folder."""

    model: str
    out: str = ""
    k: tuple[int, ...] = (10, 20)
    data: DataConfig = field(default_factory=DataConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    models: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; known: {', '.join(MODELS)}")
        extra = [n for n in self.models if n not in MODELS]
        if extra:
            raise ConfigError(f"config has [models.{extra[0]}], which is not a model; known: {', '.join(MODELS)}")
        if not self.k or not all(isinstance(k, int) and not isinstance(k, bool) and 0 < k <= 1000 for k in self.k):
            raise ConfigError(f"k must be an integer from 1 to 1000 or a list of them, got {self.k!r}")
        self.model_config()  # a bad key in [models.<name>] fails now, naming the table

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "the run config") -> RunConfig:
        """A run config from a parsed TOML document; errors name `where` and the key."""
        if not isinstance(data.get("model"), str):
            raise ConfigError(f"{where}: needs model = \"NAME\" (one of {', '.join(MODELS)})")
        data = {**data, "k": (data["k"],) if isinstance(data.get("k"), int) else data.get("k", (10, 20))}
        data["data"] = from_dict(DataConfig, data.get("data", {}), where="[data]")
        data["clean"] = from_dict(CleanConfig, data.get("clean", {}), where="[clean]")
        known = list(cls.__dataclass_fields__)
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} in {where}; known keys: {', '.join(known)}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        """The run config in the TOML file `path`."""
        return cls.from_dict(load_toml(path), where=str(path))

    def model_config(self) -> Any:
        """The model's config dataclass, from its `[models.<name>]` table over the model's defaults."""
        cls = MODELS[self.model]
        return from_dict(cls.Config, self.models.get(self.model, {}), where=f"[models.{self.model}]")

    def build_model(self) -> Recommender:
        """A fresh, unfitted model of this run."""
        return MODELS[self.model](self.model_config())

    def to_json(self) -> dict[str, Any]:
        """The config as plain data (what a bundle stores)."""
        return to_dict(self)

    def hash(self) -> str:
        """A short stable hash of the whole run config."""
        return config_hash(self)

    @classmethod
    def for_command(cls, config: str | None, bundle: Bundle | None, out: str | None, where: str = "the bundle") -> RunConfig:
        """The run of the TOML file `config` or, without one, the run `bundle` (read from folder `where`)
        was made by; `out`, when given, over its bundle folder (one of the two must name a folder)."""
        if config is not None:
            run = cls.from_toml(config)
        elif bundle is not None:
            run = cls.from_dict(bundle.meta.get("run") or {}, where=f"{where}/bundle.json")
        else:
            raise ConfigError("give a run config (a TOML file) or a bundle to repeat the run of")
        run = replace(run, out=out or run.out)
        if not run.out:
            raise ConfigError("give the bundle folder: out = \"DIR\" in the config, or --out DIR")
        return run


def start_from_bundle(model: Recommender, path: str | Path) -> Recommender:
    """`model` set to start training from the weights of the bundle at `path` (a textseq pretrained on
    another catalogue); a model that cannot, or a bundle of another kind, is a clear error."""
    if not model.can_warm_start:
        raise ConfigError(f"--init-from: model {model.name!r} cannot start from pretrained weights (textseq can)")
    pretrained = Bundle.load(path).model
    if type(pretrained) is not type(model):
        raise ConfigError(f"--init-from {path}: holds a {pretrained.name!r} model, this config trains {model.name!r}")
    try:
        return model.start_from(pretrained)
    except ValueError as exc:
        raise ConfigError(f"--init-from {path}: {exc}") from exc


def train_bundle(
    run: RunConfig, model: Recommender | None = None, dataset: Dataset | None = None, split: Split | None = None,
    progress: bool = True, extra: dict[str, Any] | None = None,
) -> tuple[Bundle, ExperimentReport]:
    """Fit `run`'s model (or `model`, built from the run with changes such as a checkpoint folder) on
    `dataset` (default: the run's data), evaluate it on the test part of `split` (default: leave one
    out), and bundle it with the run config and everything the run read."""
    dataset = load_data(run.data, run.clean) if dataset is None else dataset
    model = run.build_model() if model is None else model
    if model.needs_text and dataset.item_text is None:
        raise ValueError(f"model {run.model!r} needs item text, and dataset {dataset.name!r} has none")
    report = run_experiment(dataset, {run.model: model}, ks=run.k, split=split, progress=progress)
    document = report.to_json()
    meta = {"protocol": document["protocol"], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "training": model.training, "history": model.history, "run": run.to_json(), "run_hash": run.hash(),
            **(extra or {})}
    return Bundle.create(model, dataset, document["results"][run.model], meta), report
