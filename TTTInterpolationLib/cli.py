"""The ``tttinterp`` command line (also ``python -m TTTInterpolationLib``): a thin layer over
:mod:`TTTInterpolationLib.workflows`.

Bad input ends with one line on stderr and exit code 2, no traceback and nothing written;
heavy modules (torch) are imported only once a command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .config import (
    ADAPT,
    AUGMENT_CHOICES,
    DEFAULT_GRID_SIZE,
    DEFAULT_METHOD,
    DEVICES,
    FLOW_RESOLUTIONS,
    HEAD_TRUNKS,
    METHODS,
    MOTIONS,
    OPTIMIZERS,
    PHANTOM_KINDS,
    PRECISIONS,
    PROGRESS_KINDS,
    PROTOCOLS,
    SCHEMES,
    SPLITS,
    TASKS,
    UPSAMPLE_DEFAULT_TASK,
    resolve_method,
)
from .errors import InputError

EXIT_INPUT = 2


def _one_line(message: str) -> str:
    """The message with line breaks shown as ``\\n``: user text (a --cases value, a file
    name) may hold them, and bad input must stay one line on stderr."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"{self.prog}: error: {_one_line(message)} (see --help)\n")


def _add_model_options(p: argparse.ArgumentParser, many_tasks: bool = False,
                       many_schemes: bool = False, default_task: str | None = "none",
                       default_help: str = "none", motion: bool = True,
                       many_methods: bool = False,
                       methods: tuple[str, ...] = METHODS) -> None:
    g = p.add_argument_group("model and test-time training")
    fitted = "registration" in methods
    if not fitted:
        default, default_text = "uvinet", "uvinet"
    elif many_methods:
        default = [DEFAULT_METHOD, "uvinet"]
        default_text = " ".join(default)
    else:  # resolved with --ttt, --weights, --flow-resolution (config.resolve_method)
        default = None
        default_text = (f"{DEFAULT_METHOD}; uvinet when --ttt, --weights or --flow-resolution "
                        "is given")
    g.add_argument("--method", choices=methods, default=default,
                   nargs="+" if many_methods else None,
                   help=("registration (motion fitted to the sequence's own frames by "
                         "registering neighbouring frames; no network), " if fitted else "")
                   + "uvinet (the paper's network; --ttt adapts it) or linear (plain linear "
                   "blending of the two frames)"
                   + (" (several: rows of one table)" if many_methods else "")
                   + f" (default {default_text})")
    g.add_argument("--ttt", choices=TASKS, default=[default_task] if many_tasks else default_task,
                   nargs="+" if many_tasks else None,
                   help="task adapted on at test time: the paper's rotation, mae, cycle, or "
                   "frames (the sequence's own frames)"
                   + (" (several: one table row each)" if many_tasks else "")
                   + f" (default {default_help})")
    g.add_argument("--scheme", choices=SCHEMES, default=["online"] if many_schemes else "online",
                   nargs="+" if many_schemes else None,
                   help="online (reset per case, default), minibatch (carry weights to the next "
                   "case) or naive (adapt on all cases, then predict)"
                   + (" (several: one table row per task and scheme)" if many_schemes else ""))
    g.add_argument("--steps", type=int, default=None,
                   help="TTT optimiser steps per case (epochs for naive); default 10")
    g.add_argument("--lr", type=float, default=None,
                   help="TTT learning rate (default per task: rotation 1e-4, mae 2e-4, cycle 1e-4, "
                   "frames 1e-4)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="TTT optimiser (default per task: adam, adamw for mae)")
    g.add_argument("--adapt", choices=ADAPT, default="auto",
                   help="parameters TTT updates: features (shared feature extractor, the "
                   "paper's choice), all (whole UVI-Net), auto = all for cycle and frames, else "
                   "features")
    g.add_argument("--no-guard", action="store_true",
                   help="keep every adapted prediction; by default a case that TTT made less "
                   "self-consistent (the pair rebuilt from virtual frames) keeps the pretrained "
                   "model's prediction")
    g.add_argument("--weights", default=None,
                   help="checkpoint file (.safetensors or .pt) or a registered model name "
                   "(TTTInterpolationLib/weights/Models.json), or 'untrained' for a random "
                   "initialisation; default: the registered default model, if any")
    g.add_argument("--flow-resolution", choices=FLOW_RESOLUTIONS, default=None,
                   help="where UVI-Net estimates the motion: full, or half (frames averaged "
                   "down 2x, flows upsampled: cheaper, most of all for --ttt cycle); default: "
                   "as the model was trained")
    if motion:
        g.add_argument("--motion", choices=MOTIONS, default="auto",
                       help="which way the motion may go: in-plane (held still across the "
                       "slices of a stack of thick slices, e.g. cine MRI), 3d, or auto "
                       "(default: in-plane for a stack of thick or few slices, else 3d)")
    g.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto picks CUDA, then Apple MPS, then CPU")
    g.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    g.add_argument("--progress", choices=PROGRESS_KINDS, default="bar",
                   help="bar on stderr (default), jsonl = JSON lines on stdout, or none")


def _ttt_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TTT fields the model options set (``None``: not given, the default applies)."""
    return {"steps": args.steps, "lr": args.lr, "optimizer": args.optimizer,
            "adapt": args.adapt, "seed": args.seed, "guard": False if args.no_guard else None}


def _frame_pair(values: Sequence[int]) -> tuple[int, int]:
    return int(values[0]), int(values[1])


def _method(args: argparse.Namespace) -> str:
    """``--method``, or when not given the one :func:`~.config.resolve_method` picks: the
    network's options (weights, flow resolution) and TTT's (steps, lr, optimizer, adapt,
    --no-guard) ask for UVI-Net, which they tune."""
    ttt = args.ttt if isinstance(args.ttt, str) else None
    tuning = [v for k, v in _ttt_options(args).items() if k not in ("seed", "adapt")]
    adapt = args.adapt if args.adapt != "auto" else None
    return resolve_method(args.method, ttt, args.weights, args.flow_resolution, adapt, *tuning)


def _note_untrained(args: argparse.Namespace, progress: Any) -> None:
    """Say plainly when UVI-Net runs untrained."""
    from .models.loading import UNTRAINED, UNTRAINED_NOTE, default_weights

    methods = args.method if isinstance(args.method, list) else [_method(args)]
    if "uvinet" not in methods:
        return
    if args.weights == UNTRAINED or (args.weights is None and default_weights() is None):
        print(f"tttinterp: note: {UNTRAINED_NOTE}", file=sys.stderr)
        progress.update("load", 0.0, "note: " + UNTRAINED_NOTE)


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .config import TTTConfig
    from .runtime.progress import make_progress
    from .workflows.inference import interpolate_file

    config = TTTConfig.from_options(args.ttt, scheme=args.scheme, **_ttt_options(args))
    progress = make_progress(args.progress)
    _note_untrained(args, progress)
    result = interpolate_file(args.inputs, _frame_pair(args.frames), args.output, num=args.num,
                              times=args.times, method=_method(args), ttt=config,
                              weights=args.weights, device=args.device,
                              flow_resolution=args.flow_resolution, motion=args.motion,
                              progress=progress)
    progress.update("done", 1.0, f"wrote {result.num_frames} frames to {args.output}")
    progress.close()
    if args.progress != "jsonl":
        values = ", ".join(f"{v:g}" for v in result.index_values)
        print(f"wrote {result.num_frames} frames at index values {values} to {args.output}")
    return 0


def _evaluation_cases(args: argparse.Namespace, protocol: str,
                      progress: Any) -> list[Any]:
    """The cases of ``evaluate`` under ``protocol``: rows of ``--cases``; or the INPUT, as
    ``--frames`` pairs (protocol ``pair``) or as one case under ``x2`` / ``x4``."""
    from .data.phantoms.shifts import Shift
    from .fileio.volume_io import read_4d
    from .workflows.protocols import pair_case, protocol_case
    from .workflows.sequence_cases import load_cases, shift_sequence
    from .workflows.validation import check_request

    shift = Shift.parse(args.shift) if args.shift else None
    if args.cases is not None:
        return load_cases(args.cases, args.split, shift, args.limit, progress, protocol)
    seq = shift_sequence(read_4d(args.inputs), shift, args.seed)
    if protocol != "pair":  # one case: the whole INPUT, every k-th frame kept
        request = check_request(seq, [], hide=True)  # the volume size, before the slow work
        return [protocol_case(request.seq, protocol, name=Path(args.inputs[0]).name)]
    request = check_request(seq, [_frame_pair(f) for f in args.frames], hide=True)
    return [pair_case(request.seq, c.a, c.b, checked=c) for c in request.cases or ()]


def _protocols(args: argparse.Namespace) -> list[str]:
    """``--protocol`` values, or ``pair`` for ``--frames`` on an INPUT.

    With ``--cases`` every protocol applies (default ``edes``); an INPUT takes ``--frames``
    pairs or the protocols ``x2`` / ``x4``, not both (``edes`` needs the case list's ed and
    es: for one INPUT that is ``--frames ED ES``).
    """
    if args.cases is not None:
        if args.inputs or args.frames:
            raise InputError("give either --cases or INPUT with --frames, not both")
        return list(dict.fromkeys(args.protocol or ["edes"]))
    if not args.inputs or not (args.frames or args.protocol):
        raise InputError("give INPUT with --frames A B (repeatable) or --protocol x2/x4, or "
                         "--cases CSV")
    if args.frames and args.protocol:
        raise InputError("give INPUT either --frames A B or --protocol, not both")
    if args.protocol:
        if "edes" in args.protocol:
            raise InputError("--protocol edes needs --cases (the case list gives ed and es); "
                             "for one INPUT give --frames ED ES")
        return list(dict.fromkeys(args.protocol))
    return ["pair"]


#: Table headings per protocol.
PROTOCOL_TITLES = {
    "edes": "end-diastole -> end-systole (every frame between hidden)",
    "x2": "keep every 2nd frame, fill the rest (upsample by 2)",
    "x4": "keep every 4th frame, fill the rest (upsample by 4)",
    "pair": "frames between each --frames pair hidden",
}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .fileio.volume_io import check_output_path
    from .runtime.distributed import DistContext
    from .runtime.progress import SubProgress, make_progress
    from .workflows.evaluation import format_table
    from .workflows.parallel_eval import evaluate_rows
    from .workflows.settings import EvalSetting, evaluation_settings

    if args.json:
        check_output_path(args.json, suffixes=(".json",))
    protocols = _protocols(args)
    settings = evaluation_settings(EvalSetting("linear blending", "linear"), args.ttt,
                                   [args.scheme], args.method, **_ttt_options(args))
    ctx = DistContext.from_env()  # under torchrun the cases are split across the processes
    if args.predictions is not None:
        _check_predictions_folder(args.predictions, ctx.enabled)
    progress = make_progress(args.progress if ctx.is_main else "none")
    all_cases = {p: _evaluation_cases(args, p, progress) for p in protocols}
    if ctx.is_main:
        _note_untrained(args, progress)
    model = None
    if "uvinet" in args.method:
        from .models.loading import load_model

        model = load_model(args.weights, args.device, seed=args.seed,  # once for all protocols
                           flow_resolution=args.flow_resolution)
    reports = []
    out = sys.stderr if args.progress == "jsonl" else sys.stdout
    for k, (protocol, cases) in enumerate(all_cases.items()):
        sub = SubProgress(progress, k / len(protocols), (k + 1) / len(protocols))
        written: list[list[str]] = [[""] * len(settings) for _ in cases]
        sink = None
        if args.predictions is not None:
            sink = _prediction_writer(Path(args.predictions), protocol, cases, written)
        result = evaluate_rows(cases, settings, ctx, weights=args.weights, device=args.device,
                               seed=args.seed, model=model, motion=args.motion, progress=sub,
                               on_frames=sink)
        if result is None:  # not rank 0: rank 0 prints and writes the merged table
            continue
        rows, per_case = result
        hidden = sum(c.num_hidden for c in cases)
        print(f"{protocol}: {PROTOCOL_TITLES[protocol]}; {len(cases)} cases, {hidden} hidden "
              f"frames\n{format_table(rows)}\n", file=out)
        reports.append({"protocol": protocol, "cases": [c.name for c in cases],
                        "pairs": [[list(p) for p in c.pairs] for c in cases],
                        "table": rows, "per_case": per_case,
                        **({"predictions": written} if sink is not None else {})})
    if not ctx.is_main:
        return 0
    progress.update("done", 1.0, "evaluation finished")
    progress.close()
    if args.json:
        from .fileio.atomic import atomic_write_json

        # What was evaluated, then per protocol the table (one row per setting) and each
        # case's means. Non-finite scores (the PSNR of an exact prediction) are written null.
        atomic_write_json(args.json, {
            "input": args.cases if args.cases is not None else [str(p) for p in args.inputs],
            "split": args.split if args.cases else None, "shift": args.shift,
            "flow_resolution": args.flow_resolution,  # null: each model's own
            "motion": args.motion,
            "protocols": reports})
    return 0


def _check_predictions_folder(folder: str, distributed: bool) -> None:
    """``--predictions``: a folder that can be made, in a single-process run."""
    if distributed:
        raise InputError("--predictions writes from one process: run it without torchrun")
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise InputError(f"--predictions {folder} is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the --predictions folder {folder}: {error}") from None


def _prediction_writer(folder: Path, protocol: str, cases: Sequence[Any],
                       written: list[list[str]]) -> Callable[[int, int, list[Any]], None]:
    """``on_frames`` for ``evaluate --predictions``: one ``.seq.nrrd`` per case and setting,
    at the hidden frames' index values; ``written[case][setting]`` records each path."""
    from .fileio.volume_io import write_4d

    def write(case: int, setting: int, frames: list[Any]) -> None:
        path = folder / f"{protocol}-case{case:03d}-setting{setting:02d}.seq.nrrd"
        write_4d(path, cases[case].hidden_sequence(frames))
        written[case][setting] = str(path)

    return write


def cmd_describe(args: argparse.Namespace) -> int:
    import json

    from .contract import describe

    description = describe()
    if args.json:
        print(json.dumps(description, indent=1))
        return 0
    print(f"TTTInterpolation engine {description['version']}")
    for name, choices in description["choices"].items():
        print(f"--{name}: " + ", ".join(f"{c['value']} ({c['label']})" for c in choices))
    print("defaults: " + ", ".join(f"{k}={v}" for k, v in description["defaults"].items()))
    models = description["models"]
    for entry in models["entries"]:
        mark = " [default]" if entry["name"] == models["default"] else ""
        print(f"model {entry['name']}{mark}: {entry['description']}")
    return 0


def cmd_upsample(args: argparse.Namespace) -> int:
    from .config import TTTConfig
    from .fileio.volume_io import check_output_path, read_4d, write_4d
    from .runtime.progress import make_progress
    from .workflows.inference import check_upsample, upsample_sequence, upsample_task

    check_output_path(args.output)
    seq = read_4d(args.inputs)
    check_upsample(seq, args.factor)
    method = _method(args)
    config = TTTConfig.from_options(upsample_task(seq, args.ttt, method), scheme=args.scheme,
                                    **_ttt_options(args))
    progress = make_progress(args.progress)
    _note_untrained(args, progress)
    result = upsample_sequence(seq, args.factor, method=method, ttt=config,
                               weights=args.weights, device=args.device,
                               flow_resolution=args.flow_resolution, motion=args.motion,
                               progress=progress)
    write_4d(args.output, result)
    new = result.num_frames - seq.num_frames
    progress.update("done", 1.0, f"wrote {result.num_frames} frames ({new} new) to {args.output}")
    progress.close()
    if args.progress != "jsonl":
        print(f"wrote {result.num_frames} frames ({seq.num_frames} input, {new} new) to "
              f"{args.output}")
    return 0


def cmd_evaluate_pairs(args: argparse.Namespace) -> int:
    """Registration NCC, Dice and cycle PSNR on real ED/ES pairs (see realdata_eval)."""
    from .fileio.atomic import atomic_write_json
    from .fileio.volume_io import check_output_path
    from .runtime.progress import make_progress
    from .workflows.realdata.evaluate import (
        check_request,
        evaluate_pairs,
        format_pairs_table,
        pair_settings,
    )

    if args.json:
        check_output_path(args.json, suffixes=(".json",))
    settings = pair_settings(args.ttt, args.scheme, args.method, **_ttt_options(args))
    check_request(args.data, args.cases, args.limit, args.size)
    progress = make_progress(args.progress)
    _note_untrained(args, progress)
    result = evaluate_pairs(args.data, settings, cases=args.cases, limit=args.limit,
                            size=tuple(args.size), weights=args.weights, device=args.device,
                            seed=args.seed, flow_resolution=args.flow_resolution,
                            progress=progress)
    progress.update("done", 1.0, "evaluation finished")
    progress.close()
    print(format_pairs_table(result.rows),
          file=sys.stderr if args.progress == "jsonl" else sys.stdout)
    if args.json:
        atomic_write_json(args.json, {"data": str(args.data), **result.to_json()})
    return 0


def _add_evaluate_pairs_parser(sub: Any) -> None:
    # The default case selection spelled out (realdata.cases.TEST_SPLIT): importing that module
    # here would load torch for every command, even --help.
    p = sub.add_parser("evaluate-pairs", help="score the motion between real ED/ES pairs with "
                       "labels (registration NCC, Dice, cycle PSNR), before and after TTT")
    p.add_argument("--data", required=True, help="folder of <case>_ED/_ES.nii.gz images and "
                   "their <case>_ED_gt/_ES_gt.nii.gz labels (the ACDC layout)")
    p.add_argument("--cases", default="091-100", help="case numbers, ranges or names, e.g. "
                   "091-100 (default, the ACDC test split), 1,5,91-93, or all")
    p.add_argument("--limit", type=int, default=None, help="only the first N selected cases")
    p.add_argument("--size", type=int, nargs=3, default=DEFAULT_GRID_SIZE, metavar=("X", "Y", "Z"),
                   help="model grid: centre crop/zero-pad to this size (default "
                   f"{' '.join(map(str, DEFAULT_GRID_SIZE))})")
    p.add_argument("--json", default=None, help="also write the results to this .json file")
    _add_model_options(p, many_tasks=True, many_schemes=True, motion=False,
                       methods=tuple(m for m in METHODS if m != "registration"))
    p.set_defaults(func=cmd_evaluate_pairs)


def cmd_phantom(args: argparse.Namespace) -> int:
    from .data.datasets import write_phantom_pairs
    from .data.phantoms.sequences import make_phantom_sequence
    from .data.phantoms.shifts import Shift
    from .fileio.volume_io import check_output_path, write_4d

    shift = Shift.parse(args.shift) if args.shift else None
    size = tuple(args.size)
    if args.pairs:
        paths = write_phantom_pairs(args.output, args.pairs, kind=args.kind, size=size,
                                    seed=args.seed, shift=shift)
        print(f"wrote {len(paths) // 2} {args.kind} ED/ES pairs to {args.output}")
        return 0
    check_output_path(args.output)
    seq = make_phantom_sequence(args.kind, args.frames, size, args.seed, shift)
    write_4d(args.output, seq)
    print(f"wrote {args.kind} phantom, {seq.num_frames} frames of {seq.shape3d} to {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .workflows.demo import run_demo

    run_demo(args.out, steps=args.steps, device=args.device, weights=args.weights,
             progress_kind=args.progress)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .runtime.distributed import DistContext
    from .workflows.train import TrainOptions, curve_path, train

    options = TrainOptions(data=args.data, out=args.out, epochs=args.epochs,
                           size=tuple(args.size), zoom=tuple(args.zoom), limit=args.limit,
                           lr=args.lr, aux_weight=args.aux_weight, seed=args.seed,
                           device=args.device, resume=args.resume, width=args.width,
                           val_data=args.val_data, val_fraction=args.val_fraction,
                           val_every=args.val_every, val_cases=args.val_cases,
                           val_split=args.val_split, precision=args.precision,
                           augment=args.augment, heads=args.heads,
                           flow_resolution=args.flow_resolution)
    info = train(options, progress_kind=args.progress)
    if DistContext.from_env().is_main and args.progress != "jsonl":
        last = info["history"][-1]
        val = f", validation NCC {last['val_ncc']:.4f}" if "val_ncc" in last else ""
        print(f"wrote {args.out} after {info['epochs']} epochs (loss {last['total']:.4f}{val}, "
              f"{info['wall_seconds']:.0f} s); curve {curve_path(args.out)}")
    return 0


def cmd_train_sequences(args: argparse.Namespace) -> int:
    from .runtime.progress import make_progress
    from .workflows.train_sequences import SequenceTrainOptions, history_path, train_sequences

    options = SequenceTrainOptions(
        cases=args.cases, out=args.out, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        batch=args.batch, lr=args.lr, smooth=args.smooth, size=tuple(args.size), init=args.init,
        resume=args.resume, seed=args.seed, precision=args.precision, device=args.device,
        val_cases=args.val_cases, val_split=args.val_split)
    progress = make_progress(args.progress)
    quiet = args.progress == "jsonl"
    history = train_sequences(options, progress=progress,
                              log=lambda m: print(m, file=sys.stderr if quiet else sys.stdout))
    progress.close()
    if not quiet:
        print(f"wrote {args.out} after {len(history)} epochs (loss {history[-1]['loss']:.4f}); "
              f"history {history_path(args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tttinterp", description="UVI-Net 4D medical image interpolation with "
                     "test-time training (TTTInterpolation engine).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("interpolate", help="create frames between two frames of a 4D image")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a 4D file (.nii.gz, .nrrd, .seq.nrrd) or several 3D frame files")
    p.add_argument("--frames", nargs=2, type=int, required=True, metavar=("A", "B"),
                   help="item numbers (0-based) of the two frames to interpolate between")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--num", type=int, help="number of evenly spaced frames to create")
    when.add_argument("--times", type=float, nargs="+",
                      help="fractions strictly between 0 (frame A) and 1 (frame B)")
    p.add_argument("-o", "--output", required=True, help="output .seq.nrrd or .nii.gz")
    _add_model_options(p)
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("upsample", help="fill K-1 new frames between every two neighbouring "
                       "frames of a sequence (one model load, one adaptation)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a 4D file (.nii.gz, .nrrd, .seq.nrrd) or several 3D frame files")
    p.add_argument("--factor", type=int, required=True, metavar="K",
                   help="frames per input interval in the output (K - 1 new ones each), >= 2")
    p.add_argument("-o", "--output", required=True,
                   help="output .seq.nrrd or .nii.gz: the input frames and the new ones, in "
                   "time order (new ones at fractional index values)")
    # The default chosen on the ACDC 4D validation split: own-frame TTT with the guard beat
    # plain UVI-Net (with or without the guard) for both x2 and x4 (docs/acdc4d-headroom.md).
    _add_model_options(p, default_task=None,
                       default_help=f"{UPSAMPLE_DEFAULT_TASK} with --method uvinet (none for "
                       "fewer than 3 frames, which leave nothing to adapt on); none otherwise")
    p.set_defaults(func=cmd_upsample)

    p = sub.add_parser("evaluate", help="hide frames between pairs, predict them, score them")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="a 4D file (or 3D frame files); or give --cases instead")
    p.add_argument("--frames", nargs=2, type=int, action="append", metavar=("A", "B"),
                   help="a pair of frames of INPUT, every frame between them hidden (repeat "
                   "for more cases); or --protocol x2 / x4")
    p.add_argument("--cases", default=None, metavar="CSV",
                   help="case list (path, ed, es[, case, split] columns, e.g. "
                   "shared/data/acdc-4d/cases.csv): one case per row, every frame between ed "
                   "and es hidden")
    p.add_argument("--split", choices=SPLITS, default="all",
                   help="rows of --cases to use (default all)")
    p.add_argument("--protocol", choices=PROTOCOLS, nargs="+", default=None,
                   help="what is hidden (several: one table each): edes = every frame between "
                   "ed and es (--cases only, its default); x2 / x4 = keep every 2nd / 4th frame "
                   "(0, k, 2k, ...), hide and fill the rest (frames after the last kept one are "
                   "dropped); with INPUT: x2 / x4 instead of --frames, never both")
    p.add_argument("--shift", default=None,
                   help="distribution shift applied to every sequence, e.g. "
                   "'gamma=1.5,noise=0.03,bias=0.2' (Rician noise, seeded per case)")
    p.add_argument("--limit", type=int, default=None, help="only the first N cases of --cases")
    p.add_argument("--json", default=None, help="also write the results to this .json file")
    p.add_argument("--predictions", default=None, metavar="DIR",
                   help="also write every setting's predicted frames, per case, as .seq.nrrd "
                   "files into this folder (created; the --json report lists them)")
    _add_model_options(p, many_tasks=True, many_methods=True)
    p.set_defaults(func=cmd_evaluate)
    _add_evaluate_pairs_parser(sub)

    p = sub.add_parser("phantom", help="write a synthetic 4D phantom with exact ground truth")
    p.add_argument("--kind", choices=PHANTOM_KINDS, default="cardiac")
    p.add_argument("--frames", type=int, default=10, help="frames over one cycle (default 10)")
    p.add_argument("--size", type=int, nargs=3, default=(64, 64, 32), metavar=("X", "Y", "Z"))
    p.add_argument("--shift", default=None,
                   help="distribution shift, e.g. noise=0.05,gamma=1.5,scale=1.2,bias=0.3,blur=1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pairs", type=int, default=0,
                   help="instead: write N ED/ES pairs (seeds seed..seed+N-1) into the folder "
                   "OUTPUT in the ACDC layout, for `tttinterp train`")
    p.add_argument("-o", "--output", required=True,
                   help=".seq.nrrd or .nii.gz (a folder with --pairs)")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("demo", help="the embedded default: phantom in, table and figure out")
    p.add_argument("--out", default="tttinterp-demo", help="output folder (default tttinterp-demo)")
    p.add_argument("--steps", type=int, default=10, help="TTT steps (default 10)")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--progress", choices=PROGRESS_KINDS, default="bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train UVI-Net and its heads on pairs of frames "
                       "(also under torchrun: DistributedDataParallel)")
    p.add_argument("--data", required=True,
                   help="folder of <case>_ED/_ES.nii.gz pairs (ACDC layout) or a .csv/.json "
                   "manifest with columns path_a,path_b (3D files) or path,frame_a,frame_b "
                   "(a 4D file), optional case; relative paths from the manifest's folder")
    p.add_argument("--epochs", type=int, required=True,
                   help="total epochs (a resumed run continues up to this number)")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors or .pt); "
                   "<out>.optim.pt and <out>.curve.png are written beside it")
    p.add_argument("--size", type=int, nargs=3, default=DEFAULT_GRID_SIZE, metavar=("X", "Y", "Z"),
                   help="model grid: centre crop/zero-pad to this size (default "
                   f"{' '.join(map(str, DEFAULT_GRID_SIZE))})")
    p.add_argument("--zoom", type=float, nargs="+", default=[1.0], metavar="F",
                   help="resize each volume trilinearly by F (one factor, or one per axis) "
                   "before the crop/pad; default 1 = no resampling (published); e.g. "
                   "--zoom 0.5 --size 64 64 16 for a quick CPU model")
    p.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    p.add_argument("--val-data", default=None,
                   help="held-out pairs (folder or manifest) for validation")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="instead: hold out this fraction of --data (drawn by --seed)")
    p.add_argument("--val-cases", metavar="CASES_CSV",
                   help="also score interpolation on held-out 4D sequences after validation "
                   "epochs: a case list as for evaluate --cases (hidden frames between ED and "
                   "ES, PSNR (seq) without TTT, and linear blending)")
    p.add_argument("--val-split", choices=SPLITS, default="validation",
                   help="the case list's split for --val-cases (default validation)")
    p.add_argument("--val-every", type=int, default=1,
                   help="validate every N epochs and after the last (default 1)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--aux-weight", type=float, default=1.0,
                   help="lambda of L_main + lambda (L_rotation + L_mae) (default 1)")
    p.add_argument("--heads", choices=HEAD_TRUNKS, default="flow",
                   help="trunk of a new model's rotation/MAE heads: flow (the flow network's "
                   "encoder, so TTT moves the motion; default) or features (the TTT4MII paper)")
    p.add_argument("--width", type=float, default=1.0,
                   help="channel width factor of a new model (default 1 = published)")
    p.add_argument("--flow-resolution", choices=FLOW_RESOLUTIONS, default="full",
                   help="where a new model's flow network runs: full (default, as published) "
                   "or half (frames averaged down 2x, flows upsampled: a cheaper training "
                   "step; the model keeps it)")
    p.add_argument("--resume", default=None,
                   help="checkpoint to continue from (its .optim.pt restores Adam too)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 (or fp16) autocast on CUDA, fp32 elsewhere; bf16 may be "
                   "forced on CPU (about 2x faster on CPUs with bfloat16 units, AVX512-BF16/AMX)")
    p.add_argument("--augment", choices=AUGMENT_CHOICES, default="none",
                   help="none (default): centre crops, as published; full: organ-centred random "
                   "crops, time reversal and scanner-like intensity shifts (gamma, bias field, "
                   "blur, Rician noise), which trained worse models on the ACDC 4D validation "
                   "split (docs/acdc4d-headroom.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--progress", choices=PROGRESS_KINDS, default="bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-sequences", help="train the temporal model on every frame of full "
                       "sequences (a frame predicted from two others at its own time)")
    p.add_argument("--cases", required=True, metavar="CSV",
                   help="case list of 4D training sequences (path column; e.g. "
                   "shared/data/acdc-4d-train/cases.csv)")
    p.add_argument("--out", required=True, help="checkpoint to write; <out>.optim.pt and "
                   "<out>.history.json are written beside it every epoch")
    p.add_argument("--epochs", type=int, required=True,
                   help="total epochs (a resumed run continues up to this number)")
    p.add_argument("--steps-per-epoch", type=int, default=500, help="default 500")
    p.add_argument("--batch", type=int, default=2, help="triplets per step (default 2)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default 2e-4)")
    p.add_argument("--smooth", type=float, default=0.01,
                   help="weight of the flows' Grad_L2 smoothness (default 0.01)")
    p.add_argument("--size", type=int, nargs=3, default=(112, 96, 16), metavar=("X", "Y", "Z"),
                   help="model grid: centre crop/zero-pad (default 112 96 16, ACDC's crops)")
    p.add_argument("--init", default=None,
                   help="a UVI-Net checkpoint whose flow network (and heads) start the model; "
                   "default: random initialisation")
    p.add_argument("--resume", action="store_true",
                   help="continue --out from its checkpoint, optimiser state and history")
    p.add_argument("--val-cases", default=None, metavar="CSV",
                   help="score the validation protocols (edes, x2, x4; no TTT) on this case list "
                   "after every epoch")
    p.add_argument("--val-split", choices=SPLITS, default="validation")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto = fp32 on CPU; bf16 is about 2x faster on CPUs with bfloat16 units")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--progress", choices=PROGRESS_KINDS, default="bar")
    p.set_defaults(func=cmd_train_sequences)

    p = sub.add_parser("describe", help="what the engine offers: choices, labels, defaults, "
                       "table columns, registered models (for front ends and scripts)")
    p.add_argument("--json", action="store_true", help="print it as JSON (the front-end "
                   "contract) instead of a readable summary")
    p.set_defaults(func=cmd_describe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"tttinterp: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("tttinterp: interrupted", file=sys.stderr)
        return 130


def run() -> int:
    """The ``tttinterp`` executable and ``python -m TTTInterpolationLib``: :func:`main` in a
    process of its own, which keeps freed memory in its heap (``runtime/memory.py``: large
    tensors then reuse it instead of fresh pages; 1.2-1.4x on 128x128x32 inference here).
    A caller that runs :func:`main` inside its own process keeps its allocator as it is.
    """
    from .runtime.memory import keep_freed_memory_unless_disabled

    keep_freed_memory_unless_disabled()
    return main()


if __name__ == "__main__":
    sys.exit(run())
