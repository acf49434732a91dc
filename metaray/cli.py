"""The `metaray` command: train | eval | tune | serve.

metaray train CONFIG [section.key=value ...] [--resume]
metaray eval  CONFIG [section.key=value ...] [--out FILE]
metaray tune  SWEEP  [section.key=value ...] [--resume] [--num-samples N] [--output DIR]
metaray data  CONFIG [section.key=value ...]
metaray serve SERVE_CONFIG [key=value ...] [--host H] [--port P]
metaray export SERVE_CONFIG TASK_ID OUT_DIR [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from metaray.config import load_config
from metaray.errors import MetarayError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metaray", description="Distributed meta-learning of soft prompts on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("train", "meta-train a soft prompt"), ("eval", "run the meta-test protocol")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("config", help="experiment YAML (see configs/)")
        cmd.add_argument("overrides", nargs="*", help="dotted overrides, e.g. meta.inner.lr=1e-3")
        cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.choices["train"].add_argument(
        "--resume", action="store_true", help="continue output.dir's latest checkpoint (bit-identical to no stop)"
    )
    sub.choices["eval"].add_argument("--out", help="write the result JSON here (default: OUTPUT_DIR/eval.json)")
    data = sub.add_parser("data", help="what the config's task families hold, and whether its episode shapes fit")
    data.add_argument("config", help="experiment YAML (see configs/)")
    data.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.sources.mine.path=intents.csv")
    tune = sub.add_parser("tune", help="search meta-hyperparameters with Ray Tune")
    tune.add_argument("config", help="sweep YAML (see tune_configs/)")
    tune.add_argument("overrides", nargs="*", help="dotted overrides of the base experiment, for every trial")
    tune.add_argument("--resume", action="store_true", help="continue the interrupted sweep in its output folder")
    tune.add_argument("--quiet", action="store_true", help="no progress bar (Tune's own status lines instead)")
    tune.add_argument("--num-samples", type=int, help="trials (default: the sweep file's num_samples)")
    tune.add_argument("--output", help="folder or URI for the sweep (default: the sweep file's output)")
    serve = sub.add_parser("serve", help="serve few-shot tasks over HTTP (Ray Serve)")
    serve.add_argument("config", help="Ray Serve config YAML (serve/config.yaml)")
    serve.add_argument("overrides", nargs="*", help="overrides of the application's args, e.g. checkpoint=runs/demo")
    serve.add_argument("--host", help="bind address (default: the file's http_options.host, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: the file's http_options.port, else 8000)")
    export = sub.add_parser("export", help="export a served task as a PEFT prompt-tuning adapter")
    export.add_argument("config", help="the Ray Serve config YAML the task was served with")
    export.add_argument("task_id")
    export.add_argument("out", help="folder for adapter_config.json + adapter_model.safetensors")
    export.add_argument("overrides", nargs="*", help="overrides of the application's args, e.g. store=DIR")
    return parser


def _data(args: argparse.Namespace) -> int:
    from metaray.data_report import family_rows, format_rows

    rows = family_rows(load_config(args.config, args.overrides))
    print(format_rows(rows))
    return 2 if any(r.problem for r in rows) else 0


def _export(args: argparse.Namespace) -> int:
    from metaray.serving.run import export_task, load_serve_config

    print(f"wrote {export_task(load_serve_config(args.config, args.overrides), args.task_id, args.out)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from metaray.serving.run import load_serve_config, serve_forever

    serve_forever(load_serve_config(args.config, args.overrides), args.host, args.port)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from metaray.tuning import load_sweep, run_sweep, write_report

    spec = load_sweep(args.config, output=args.output, num_samples=args.num_samples)
    summary = write_report(run_sweep(spec, tuple(args.overrides), resume=args.resume, progress=not args.quiet))
    print(json.dumps(summary, default=str))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Options may sit anywhere among the overrides (`train c.yaml --quiet a.b=1 c.d=2`)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "tune":
            return _tune(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "export":
            return _export(args)
        if args.command == "data":
            return _data(args)
        cfg = load_config(args.config, args.overrides)
        if args.command == "train":
            from metaray.distributed import train

            given = sys.argv[1:] if argv is None else argv
            resume = "metaray " + shlex.join([*given, *([] if args.resume else ["--resume"])])
            # printed first: whatever ends the run (a lost head node takes this process with it), it is in the log
            print(
                f"metaray: checkpoints go to {cfg.output.dir}; a stopped run continues with: {resume}", file=sys.stderr
            )
            summary = train(cfg, progress=not args.quiet, resume=args.resume)
            print(json.dumps(summary))
        else:
            from metaray.eval import evaluate, format_table, write_result
            from metaray.plots import accuracy_vs_steps
            from metaray.storage import write_bytes

            result = evaluate(cfg, progress=not args.quiet)
            print(format_table(result))
            out = args.out or f"{cfg.output.dir.rstrip('/')}/eval.json"
            write_result(result, out, "metaray " + shlex.join(sys.argv[1:] if argv is None else argv))
            plot = f"{out.rpartition('/')[0] or '.'}/accuracy_vs_steps.png"
            write_bytes(plot, accuracy_vs_steps(result))
            print(f"\nwrote {out} and {plot}")
    except MetarayError as err:
        print(f"metaray: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
