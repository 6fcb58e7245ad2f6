"""`kikimimi export onnx MODEL OUT.onnx [--int8]`: the audio encoder as an ONNX file for ONNX Runtime."""

from __future__ import annotations

import argparse
import sys

from kikimimi.commands._options import MODEL_NAME_HELP, add_accept_licence_argument

NAME = "export"
HELP = "Export an audio encoder to ONNX (normalised log-mel in, frame features out; fp32 or int8)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=("onnx",), help="export format")
    parser.add_argument("model", help="official weight file or kikimimi folder" + MODEL_NAME_HELP)
    parser.add_argument("out", help="output .onnx file (load it with kikimimi.load or `kikimimi embed -m`)")
    parser.add_argument("--int8", action="store_true",
                        help="dynamic int8 quantisation of the weight MatMuls (ONNX Runtime), done once here")
    parser.add_argument("--norm-stats", nargs=2, type=float, metavar=("MEAN", "STD"),
                        help="log-mel statistics stored in the file (needed for BYOL-A files)")
    parser.add_argument("--trust-pickle", action="store_true", help="allow arbitrary pickles (trusted files only)")
    add_accept_licence_argument(parser)


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import check_model_paths

    check_model_paths([args.model])  # a path that does not exist: a usage error (exit 2) before anything is written
    import kikimimi
    from kikimimi.inference.onnx_runtime import export_onnx, is_onnx_path

    if not is_onnx_path(args.out):
        print(f"error: '{args.out}': the output name must end in .onnx", file=sys.stderr)
        return 2
    try:
        model = kikimimi.load(args.model, device="cpu", norm_stats=args.norm_stats, trust_pickle=args.trust_pickle,
                              accept_licence=args.accept_licence)
        out = export_onnx(model.bundle, args.out, int8=args.int8)
    except (ValueError, ImportError, OSError) as exc:  # CheckpointError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({'int8' if args.int8 else 'fp32'}, {out.stat().st_size / 1e6:.1f} MB)")
    return 0
