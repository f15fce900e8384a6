"""A team's runs in MLflow: each trained experiment and each stack becomes one MLflow run.

Off unless the config names `tracking.uri` (a local database file is the simplest:
`sqlite:///mlruns.db`; or a team's tracking server). A run carries the config that made
it (as parameters), the CV mean Pearson per target and overall, the held-out test where
there is one, and the paths of the artifacts (as tags); the artifacts themselves stay in
models/ and ensembles/. A run is logged once per result: `taemi run` again with nothing
changed logs nothing new. See the runs with `mlflow ui --backend-store-uri URI`.
"""

from __future__ import annotations

import logging
from typing import Any

from taemi.artifacts import stable_hash
from taemi.config import Config, ConfigError, mask_url
from taemi.progress import is_quiet


def _flat(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested config as MLflow parameters: dotted keys, values as text."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(tree)}


def _scores(prefix: str, table: dict | None) -> dict[str, float]:
    return {f"{prefix} {k}": float(v) for k, v in (table or {}).items() if v is not None}


def _unusable(cfg: Config, err: Exception) -> ConfigError:
    return ConfigError(f"config key 'tracking.uri' ({mask_url(cfg.tracking.uri)}): "
                       f"MLflow cannot use it: {str(err).splitlines()[0]}")


def check_tracking(cfg: Config) -> Any:
    """Open the tracking URI (MLflow's module, or None where tracking is off): called
    before any training, so a URI that cannot be used stops the run before its work, not
    after."""
    if cfg.tracking.uri is None:
        return None
    try:
        import mlflow
    except ImportError:
        raise ConfigError("config key 'tracking.uri' is set but MLflow is not installed: "
                          "pip install mlflow-skinny") from None
    if is_quiet():  # -q: not MLflow's and its database migrations' INFO lines either
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        mlflow.set_tracking_uri(cfg.tracking.uri)
        mlflow.set_experiment(cfg.tracking.experiment or cfg.name)
    except Exception as err:  # any backend failure: the URI does not work for MLflow
        raise _unusable(cfg, err) from None
    return mlflow


def log_run(cfg: Config, kind: str, name: str, result: dict, params: dict,
            metrics: dict[str, float], paths: dict[str, str]) -> str | None:
    """Log one result (its cv.json) as an MLflow run, unless that result is already there;
    return its run id, or None where tracking is off."""
    if cfg.tracking.uri is None:
        return None
    mlflow = check_tracking(cfg)
    digest = stable_hash({"kind": kind, "name": name, "result": result})
    try:
        logged = mlflow.search_runs(filter_string=f"tags.taemi_digest = '{digest}'",
                                    output_format="list")
    except Exception as err:  # any backend failure: the URI does not work for MLflow
        raise _unusable(cfg, err) from None
    if logged:
        return logged[0].info.run_id
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags({"taemi_kind": kind, "taemi_digest": digest, "taemi_config": cfg.name,
                         **{f"path.{k}": v for k, v in paths.items()}})
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        return run.info.run_id


def log_experiment(cfg: Config, name: str, cv: dict) -> str | None:
    """An experiment's config, CV per target, held-out test and artifact folders."""
    exp = cfg.experiments[name]
    params = _flat({"model": exp.model.resolved(), "train": cfg.train_for(name).model_dump(
        mode="json"), "backbones": cfg.backbones_for(name), "seeds": exp.seeds,
        "folds": {"group_by": cfg.folds.group_by, "n_splits": cfg.folds.n_splits},
        "selection": cv.get("selection")})
    metrics = {**_scores("cv", cv["overall"]), **_scores("test mean", cv.get("heldout_test"))}
    if cv.get("heldout_test_single") is not None:
        metrics["test single mean"] = float(cv["heldout_test_single"])
    return log_run(cfg, "experiment", name, cv, params, metrics,
                   {"models": str(cfg.experiment_dir(name)), "folds": str(cfg.folds.path)})


def log_stack(cfg: Config, cv: dict) -> str | None:
    """A stack's members, method, CV per target and the leaderboard's held-out tests."""
    stack = cfg.stack
    params = _flat({"stack": stack.model_dump(mode="json"), "method": cv["method"],
                    "members": cv["members"]})
    metrics = _scores("cv", cv["overall"])
    for row, scores in cv["leaderboard"].items():  # best single, blends and stacks
        metrics[f"{row} cv mean"] = float(scores["cv"]["mean"])
        if scores.get("heldout_test"):
            metrics[f"{row} test mean"] = float(scores["heldout_test"]["mean"])
    return log_run(cfg, "stack", cv["ensemble"], cv, params, metrics,
                   {"ensemble": str(cfg.paths.ensembles / cv["ensemble"]),
                    "folds": str(cfg.folds.path)})
