"""The `taemi` command. Each subcommand is a thin shell over one step in `taemi.pipeline`.

    taemi synth data/demo --scale 0.05      generate a dataset in the organisers' layout
    taemi cache configs/demo.yaml           pack features; print the data report
    taemi inspect configs/demo.yaml         who is in the clips; which folds match the test
    taemi folds configs/demo.yaml           write folds/folds.csv
    taemi train configs/demo.yaml           train every experiment's grid
    taemi robustness demo-taemi             its score with each modality removed
    taemi tune configs/demo.yaml            Optuna over the dropout rates
    taemi stack configs/demo.yaml           nested LightGBM stack
    taemi submit configs/demo.yaml          validated submission CSV
    taemi validate FILE --config CONFIG     check any CSV
    taemi run configs/demo.yaml             all of it, each step skipped when current
    taemi report configs/demo.yaml          the leaderboard with plots

Every command that takes a CONFIG also takes `--set key.path=value` (repeatable) and
`--quiet`. Bad input ends with one line naming the file, id, column or key, and exit 2.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from collections.abc import Callable, Sequence

from taemi.cache import remembering
from taemi.config import Config, ConfigError, load_config, mask_secrets
from taemi.data import DataError
from taemi.progress import echo, set_quiet

PATH_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
               errno.ENOSPC, errno.EEXIST, errno.EIO)
Handler = Callable[[argparse.Namespace], int | None]
USER_ERRORS = (ConfigError, DataError, FileExistsError, FileNotFoundError)



def _config(args: argparse.Namespace) -> Config:
    from taemi.stacking import check_stack

    cfg = load_config(args.config, args.set, args.overlay)
    check_stack(cfg)
    return cfg


def cmd_synth(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from taemi.config import SynthConfig
    from taemi.synth import SynthParams, generate

    try:  # the command line obeys the config section's rules: one rule for both
        checked = SynthConfig(scale=args.scale, seed=args.seed, dtype=args.dtype,
                              seed_videos=args.seed_videos, text_meaning=args.text_meaning)
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']} "
                          f"(got {first.get('input')!r})") from None
    params = SynthParams(scale=checked.scale, seed=checked.seed, dtype=checked.dtype,
                         seed_videos=checked.seed_videos, text_meaning=checked.text_meaning,
                         workers=args.workers)
    summary = generate(args.root, params, force=args.force)
    clips = summary["clips"]
    print(f"{args.root}: {clips['train']:,} train / {clips['valid']:,} valid / "
          f"{clips['test']:,} test clips; oracle test mean Pearson "
          f"{summary['oracle']['test']['mean']:.3f}")


def cmd_cache(args: argparse.Namespace) -> None:
    from taemi.pipeline import ensure_cache, ensure_data

    cfg = _config(args)
    for (name, steps), pack in ensure_cache(cfg, ensure_data(cfg)).items():
        echo(f"{name} (K={steps}): {pack.folder}")


def cmd_folds(args: argparse.Namespace) -> None:
    from taemi.artifacts import read_json
    from taemi.pipeline import ensure_folds, open_data

    cfg = _config(args)
    folds = ensure_folds(cfg, open_data(cfg))
    counts = folds["fold"].value_counts().sort_index()
    print(f"{cfg.folds.path}: " + ", ".join(
        f"{'holdout' if k < 0 else f'fold {k}'}: {n:,}" for k, n in counts.items()))
    record = cfg.folds.path.with_name("folds.json")
    if record.is_file():
        info = read_json(record)
        print(f"grouped by {info['chosen']} (group_by: {info['group_by']}): {info['reason']}")


def cmd_inspect(args: argparse.Namespace) -> None:
    from taemi.pipeline import ensure_cache, open_data
    from taemi.splits import inspect_data

    cfg = _config(args)
    data = open_data(cfg)
    ensure_cache(cfg, data, report=False)
    evidence, choice, reason = inspect_data(cfg, data)
    print("\n".join(evidence.lines()))
    print(f"folds.group_by auto -> {choice}: {reason}")
    if cfg.folds.group_by not in ("auto", choice):
        print(f"(this config sets folds.group_by: {cfg.folds.group_by})")


def cmd_train(args: argparse.Namespace) -> None:
    from taemi.pipeline import train_experiments

    cfg = _config(args)
    results = train_experiments(cfg, args.experiment or None, args.executor)
    for name, cv in results.items():
        print(f"{name}: CV mean Pearson {cv['overall']['mean']:.4f} "
              f"({cfg.experiment_dir(name) / 'cv.json'})")


def cmd_robustness(args: argparse.Namespace) -> None:
    from taemi.robustness import resolve_experiment, robustness, write_robustness

    cfg, experiment = resolve_experiment(args.experiment, args.models)
    table = robustness(cfg, experiment)
    plot = write_robustness(cfg, experiment, table)
    print(table[["mean", "loss_vs_all"]].round(4).to_string())
    print(f"table and plot: {plot.with_suffix('.csv')}, {plot}")


def cmd_stack(args: argparse.Namespace) -> None:
    from taemi.pipeline import ensure_stack
    from taemi.stacking import leaderboard_table

    cfg = _config(args)
    cv = ensure_stack(cfg)
    print(leaderboard_table(cv).round(4).to_string())
    print(f"{cfg.paths.ensembles / cv['ensemble']}: {cv['method']} "
          f"(CV mean Pearson {cv['overall']['mean']:.4f})")


def cmd_tune(args: argparse.Namespace) -> None:
    from taemi.pipeline import ensure_tuning

    if args.workers:
        args.set = [*(args.set or []), f"tune.workers={args.workers}"]
    cfg = _config(args)
    overlay = ensure_tuning(cfg, n_trials=args.n_trials)
    print(overlay.read_text().splitlines()[0].lstrip("# "))
    print(f"train with it: taemi train {args.config} --overlay {overlay}")


def cmd_submit(args: argparse.Namespace) -> None:
    from taemi.pipeline import ensure_submission

    cfg = _config(args)
    source = args.source or (cfg.submit.source if cfg.submit else None)
    name = args.name or (cfg.submit.name if cfg.submit else None)
    name = name.removesuffix(".csv") if name else name  # --name final.csv: final.csv
    if not source or not name:
        raise ConfigError("give --from SOURCE and --name NAME (or a `submit` config section)")
    path = ensure_submission(cfg, source, name, overwrite=args.force)
    print(f"{path}: valid submission")


def cmd_validate(args: argparse.Namespace) -> int:
    from taemi.data import read_id_list
    from taemi.pipeline import open_data
    from taemi.submission import submission_problems

    test_ids = None
    if args.config:
        test_ids = open_data(load_config(args.config, args.set)).test_ids
    elif args.test_ids:
        test_ids = read_id_list(args.test_ids)
    problems = submission_problems(args.file, test_ids)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:  # one rule for every refusal: exit 2
        return 2
    scope = "" if test_ids is not None else " (format only: give --config or --test-ids to " \
        "check the id set)"
    print(f"{args.file}: valid submission{scope}")
    return 0


def cmd_run(args: argparse.Namespace) -> None:
    from taemi.pipeline import run_all

    results = run_all(_config(args))
    board = results["leaderboard"]
    print("\nleaderboard (mean Pearson; cv: out-of-fold, estimates test single: one fold "
          "model on the held-out test; test mean: the fold models' mean, what is submitted)")
    print(f"  {'':<42} {'cv':>8} {'single':>8} {'mean':>8}")
    for row in board:
        cells = ["" if row[k] is None else f"{row[k]:.4f}"
                 for k in ("cv mean", "test single", "test mean")]
        print(f"  {row['entry']:<42} " + " ".join(f"{c:>8}" for c in cells))
    if "submission" in results:
        print(f"submission: {results['submission']}")
    print(f"report: {results['report']}")


def cmd_plan(args: argparse.Namespace) -> None:
    from taemi.pipeline import open_data
    from taemi.plan import describe

    cfg = _config(args)
    entries = describe(cfg, open_data(cfg))
    todo = [e for e in entries if not e.current]
    print(f"plan of {args.config} ({len(entries) - len(todo)} current, {len(todo)} to make):")
    for entry in entries:
        print(entry.line())
    if args.verbose:
        for entry in entries:
            for label in entry.details.get("to_train", []):
                print(f"    to train: {label}")


def cmd_report(args: argparse.Namespace) -> None:
    from taemi.pipeline import open_data
    from taemi.report import write_report

    cfg = _config(args)
    print(write_report(cfg, open_data(cfg)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taemi", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, parents=[common])
        p.set_defaults(handler=handler)
        return p

    def with_config(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = command(name, handler, help)
        p.add_argument("config", help="run config (YAML)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key, e.g. --set train.epochs=3")
        p.add_argument("--overlay", action="append", default=[], metavar="YAML",
                       help="merge a YAML overlay (e.g. tuned parameters) into the config")
        return p

    p = command("synth", cmd_synth, "generate a dataset in the organisers' layout")
    p.add_argument("root", help="folder to write (created atomically)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the real split sizes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed-videos", choices=("shared", "disjoint"), default="shared",
                   help="shared: test clips mimic the labelled clips' seed videos (default); "
                        "disjoint: each seed video in one split")
    p.add_argument("--text-meaning", type=float, default=0.0,
                   help="0-1: how much a clip's own words say about its own intensities "
                        "(0: the words name the seed video only; P: the speaker adds to the "
                        "script a Poisson number of each emotion's words, mean 12 P times the "
                        "clip's intensity of it)")
    p.add_argument("--force", action="store_true",
                   help="replace generated data made with other parameters (never any other "
                        "folder)")

    with_config("cache", cmd_cache, "pack feature folders into the memory-mapped cache")
    with_config("inspect", cmd_inspect, "participants, recurring labels and transcripts: "
                "which folds match the test")
    with_config("folds", cmd_folds, "write the shared fold assignment")
    p = with_config("train", cmd_train, "train the experiment grid (backbones x seeds x folds)")
    p.add_argument("--experiment", "-e", action="append", default=[],
                   help="train only this experiment (repeatable); default: all")
    p.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="where jobs run (default: the config's `executor`)")
    p = command("robustness", cmd_robustness,
                "score an experiment's fold models with modalities removed")
    p.add_argument("experiment", help="experiment folder, or its name under --models")
    p.add_argument("--models", default="models", help="models folder (default: models)")

    p = with_config("stack", cmd_stack, "nested LightGBM stack of trained experiments")
    p = with_config("tune", cmd_tune, "Optuna search over an experiment's dropout rates")
    p.add_argument("--n-trials", type=int, default=None,
                   help="finished trials the study should reach (default: tune.n_trials)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes on this machine, sharing its cores "
                        "(default: tune.workers)")
    p = with_config("submit", cmd_submit, "write a validated challenge submission CSV")
    p.add_argument("--from", dest="source", default=None,
                   help="ensemble or experiment name (or folder) whose test.csv to submit")
    p.add_argument("--name", default=None, help="submissions/<name>.csv")
    p.add_argument("--force", action="store_true", help="replace a different existing file")
    p = command("validate", cmd_validate, "check any CSV against the submission format")
    p.add_argument("file")
    p.add_argument("--config", default=None, help="take the test ids from this config's data")
    p.add_argument("--test-ids", default=None, help="or from a test id list")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    with_config("run", cmd_run, "the end-to-end run, each step skipped when current")
    with_config("report", cmd_report, "leaderboard across experiments and ensembles")
    p = with_config("plan", cmd_plan, "what is current and what a run would make, and why "
                    "(builds and trains nothing)")
    p.add_argument("--verbose", "-v", action="store_true", help="list every job to train")

    from taemi.extract.cli import add_commands  # feature extraction from raw media

    add_commands(command, with_config)
    return parser


# errors that explain themselves in one line, from modules not every command loads (the
# training module imports torch): checked without importing them
EXPLAINED = {"taemi.training": "TrainingDiverged", "taemi.executors": "WorkerDied",
             "taemi.plugins": "PluginError", "taemi.models": "ModelOutputError"}


def _explained(err: Exception) -> bool:
    for module, name in EXPLAINED.items():
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(err, getattr(loaded, name)):
            return True
    return False


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (`timeout`, a scheduler's time limit, a closed terminal, a
    container stop): the command stops as Ctrl-C stops it, every process it started with it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_on(signum: int, frame: object) -> None:
    raise Stopped(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_quiet(args.quiet)
    handlers = {sig: signal.signal(sig, _stop_on) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with remembering():  # each feature folder quick-checked once a command
            return int(args.handler(args) or 0)
    except KeyboardInterrupt as err:
        how = f"stopped by {err.args[0]}" if isinstance(err, Stopped) else "interrupted"
        print(f"taemi {args.command}: {how}; run the same command again to resume where "
              "it stopped", file=sys.stderr)
        return 128 + err.signum if isinstance(err, Stopped) else 130
    except Exception as err:
        if isinstance(err, USER_ERRORS) or _explained(err):
            message = str(err)
        elif isinstance(err, OSError) and err.errno in PATH_ERRNOS:
            # a path the kit cannot write: name it, in one line
            what = "disk full" if err.errno == errno.ENOSPC else err.strerror
            message = f"{what}: {err.filename or ''}"
        else:
            raise
        print(f"taemi {args.command}: error: {mask_secrets(message)}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
