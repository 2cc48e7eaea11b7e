#!/usr/bin/env python
"""The README's main job, offline in a few minutes on 2 CPU cores.

    python scripts/quickstart.py [--output_dir runs/quickstart] [--pages 128] [--epochs 10]

1. Fine-tunes a small LayoutLM-RoIAlign (random text encoder and ResNet-18 backbone, WordPiece vocabulary built
   from the training words) on synthetic forms whose headers differ from questions only in the pixels, with
   `scripts/train.py`'s run (`layoutlm_roialign.commands.train`: `Trainer`, evaluation every epoch, best checkpoint
   kept), and prints the entity scores.
2. Labels an unseen synthetic page with `pipeline(model=folder, trust_remote_code=True)` (the code files saved
   beside the weights) in a fresh process that cannot import this package.
3. Labels the same page here (`inference.predict_page`, the road the pipeline is built on), checks that both give
   the same labels (and pairs), and writes `prediction.json` and `prediction.png` (each entity's box in its
   label's colour).

`--linking` runs the same three steps for the key-value linking model (`scripts/train.py --task linking`: labels
and question -> answer links in one checkpoint, trained on the synthetic forms' links); step 3 then also writes the
pairs (`"pairs"` in the JSON, an arrow from each question to its answer in the picture).

The real run (FUNSD, LayoutLM-base, ImageNet ResNet-101) is `scripts/train.py`; see the README.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LOAD_AS_REMOTE_CODE = """
import json, sys
sys.modules["layoutlm_roialign"] = None  # the package must not be needed: only the folder's own code
from transformers import pipeline
folder, page = sys.argv[1], json.load(open(sys.argv[2]))
pipe = pipeline(model=folder, trust_remote_code=True)
print(json.dumps({"class": type(pipe.model).__name__, "prediction": pipe(page)}))
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="runs/quickstart")
    parser.add_argument("--pages", type=int, default=128, help="synthetic pages (20%% held out for validation)")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--text_only", action="store_true", help="the ablation: switch the visual branch off")
    parser.add_argument("--linking", action="store_true", help="train and show the key-value linking model")
    args = parser.parse_args(argv)

    import torch
    import transformers
    from transformers import TrainingArguments

    from layoutlm_roialign.commands.train import TRAIN_SCRIPT_DEFAULTS, ModelArguments, run_training
    from layoutlm_roialign.configuration_layoutlm_roialign import label_names
    from layoutlm_roialign.data import DataArguments, render_synthetic_form
    from layoutlm_roialign.drawing import draw_prediction
    from layoutlm_roialign.inference import load_model_and_processor, predict_page
    from layoutlm_roialign.trainer import precision_defaults

    transformers.utils.logging.set_verbosity_warning()
    torch.manual_seed(0)
    model_args = ModelArguments(
        backbone="resnet18",  # random weights offline; group norm follows from that (backbone_norm="auto")
        image_size=224,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        tokenizer_vocab_size=400,
        use_visual_features=not args.text_only,  # one learning rate for every part, as users train
        task="linking" if args.linking else "token-classification",
    )
    data_args = DataArguments(
        dataset="synthetic", synthetic_pages=args.pages, validation_size=0.2, max_length=128, stride=32
    )
    training_args = TrainingArguments(
        **{**TRAIN_SCRIPT_DEFAULTS, "output_dir": args.output_dir, "logging_strategy": "no"},
        num_train_epochs=args.epochs,
        learning_rate=2e-3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        seed=0,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        **precision_defaults(gpu_bf16=False),  # as scripts/train.py: float32 unless asked
    )
    print(f"1/3 Fine-tuning on {args.pages} synthetic forms ({args.epochs:g} epochs) ...", flush=True)
    result = run_training(model_args, data_args, training_args)
    scores = result["entity_scores"]
    print(f"\nValidation entity scores (seqeval, best epoch), saved to {result['final_dir']}:")
    print(f"  {'':10} {'precision':>9} {'recall':>7} {'F1':>7} {'entities':>8}")
    for name, s in sorted(scores["per_type"].items()):
        print(f"  {name:10} {s['precision']:9.3f} {s['recall']:7.3f} {s['f1']:7.3f} {s['number']:8d}")
    print(f"  {'overall':10} {scores['precision']:9.3f} {scores['recall']:7.3f} {scores['f1']:7.3f}")
    for name, key in (("gold entities", "gold_entities"), ("end to end", "end_to_end")):
        if result.get("link_scores"):
            s = result["link_scores"][key]
            print(f"  pairs, {name}: precision {s['precision']:.3f} recall {s['recall']:.3f} F1 {s['f1']:.3f}")

    final = Path(result["final_dir"]).resolve()  # the check below runs in another working directory
    image, words, boxes, _ = render_synthetic_form(seed=12345, index=0)  # a page no run has seen
    out = Path(args.output_dir).resolve()
    image.save(out / "page.png")
    print(
        f"\n2/3 Labelling an unseen page with pipeline(model={final}, trust_remote_code=True) in a fresh process "
        "without this package ...",
        flush=True,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"image": str(out / "page.png"), "words": words, "boxes": boxes}, f)
    child = subprocess.run(
        [sys.executable, "-c", LOAD_AS_REMOTE_CODE, str(final), f.name], capture_output=True, text=True, cwd="/"
    )
    os.unlink(f.name)
    if child.returncode != 0:
        raise SystemExit(f"Loading the checkpoint as remote code failed:\n{child.stderr[-3000:]}")
    remote = json.loads(child.stdout.strip().splitlines()[-1])

    model, processor = load_model_and_processor(final)  # the class its config names: the linking model's too
    print("\n3/3 Labelling the page here ...", flush=True)
    with torch.no_grad():
        prediction = predict_page(model, processor, image, words, boxes)
    same = [w["label"] for w in prediction["words"]] == [w["label"] for w in remote["prediction"]["words"]]
    same_pairs = prediction.get("pairs") == remote["prediction"].get("pairs")
    print(f"  {remote['class']} loaded by the pipeline; same labels here: {same}; same pairs: {same_pairs}")
    if not (same and same_pairs):
        raise SystemExit("The pipeline without the package and the package's own road disagree.")
    (out / "prediction.json").write_text(json.dumps(prediction, indent=2))
    draw_prediction(image.convert("RGB"), prediction, label_names(model.config)).save(out / "prediction.png")
    pairs = f", {len(prediction['pairs'])} pairs" if "pairs" in prediction else ""
    print(f"  {len(prediction['words'])} words, {len(prediction['entities'])} entities{pairs}")
    print(f"  -> {out / 'prediction.json'}\n  -> {out / 'prediction.png'}")


if __name__ == "__main__":
    main()
