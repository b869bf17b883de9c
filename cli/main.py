"""The ``diffsci`` command line: ``diffsci demo`` and, as they land, ``diffsci <domain> ...``."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from diffsci.core.demo import run_demo

    summary = run_demo(
        out=args.out,
        steps=args.steps,
        n_samples=args.samples,
        seed=args.seed,
        figure=not args.no_figure,
        progress=not args.quiet,
    )
    print(
        f"trained {summary['train_steps']} steps in {summary['train_seconds']:.1f} s "
        f"(loss {summary['final_loss_mean_last_100']:.4f})"
    )
    print("sliced Wasserstein-2 to exact samples (lower is better):\n")
    print(summary["table_markdown"])
    print(
        f"\nwrote {args.out}/results.json, {args.out}/demo.pt"
        + ("" if args.no_figure else f", {args.out}/demo.png")
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffsci", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small model on a 2-D mixture and compare samplers")
    demo.add_argument("--out", default="diffsci-demo", help="output folder (default: diffsci-demo)")
    demo.add_argument("--steps", type=int, default=3000, help="training steps (default: 3000)")
    demo.add_argument(
        "--samples", type=int, default=4000, help="samples per solver (default: 4000)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-figure", action="store_true", help="skip the PNG figure")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
    from diffsci.restoration.cli import add_parser as add_restore

    add_restore(sub)
    from diffsci.timeseries.cli import add_parser as add_timeseries

    add_timeseries(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:  # bad input: one clear line, no traceback
        print(f"diffsci: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
