#!/usr/bin/env python
"""Export a token-classification or linking checkpoint to ONNX, for ONNX Runtime (`--runtime onnx` of the drivers).

    python scripts/export_onnx.py runs/main/final runs/main/onnx                   # float32
    python scripts/export_onnx.py runs/main/final runs/main/onnx-int8 --quantize int8
    python scripts/predict.py --model runs/main/onnx --runtime onnx --image page.png

The export runs ONNX Runtime and PyTorch on windows of synthetic pages built with the checkpoint's processor and fails
(exit status 2, nothing written) above the tolerance it prints: in float32, 1e-4 on the logits, or twice PyTorch's own
float32 noise on the model (its logits at 1 against 4 windows per pass) where that is larger (`--tolerance` sets it);
in int8, every token whose float32 margin exceeds 1.0 keeps its label. OUTPUT_DIR is written whole and renamed into place; an existing
OUTPUT_DIR is replaced only if it is an earlier export. The export is `layoutlm_roialign.onnx_export.export_onnx`.
Needs `pip install 'layoutlm-roialign[onnx]'`.
"""

import argparse
import sys
from collections.abc import Sequence

from layoutlm_roialign.onnx_export import DEFAULT_OPSET, export_onnx


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="The checkpoint folder (e.g. runs/main/final) or Hub id.")
    parser.add_argument("output_dir", help="The folder to write (a new one, or an earlier export to replace).")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="int8: ONNX Runtime dynamic quantization.")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {DEFAULT_OPSET}).")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="Largest |ONNX - PyTorch| on float32 logits (default 1e-4, or 2x PyTorch's own noise).",
    )
    parser.add_argument("--trust_remote_code", action="store_true", help="Run the checkpoint's own code (Hub ids).")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return export_onnx(
            args.checkpoint,
            args.output_dir,
            args.quantize,
            args.opset,
            trust_remote_code=args.trust_remote_code,
            tolerance=args.tolerance,
        )
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
