#!/usr/bin/env python
"""Publish a checkpoint folder to the Hugging Face Hub and, with `--space`, a Gradio Space running the demo on it.

    python scripts/publish.py --model runs/main/final --repo_id user/layoutlm-roialign-funsd
    python scripts/publish.py --model runs/main/final --repo_id user/layoutlm-roialign-funsd --space user/forms-demo

The folder is what scripts/train.py saves (model, processor, their code, the model card `README.md`); it is pushed
in one commit. With `--space`, the published model card gets a link to the Space (written into the folder's README.md
once the model's push succeeded), then the Space is created or updated: `demo/` with its README's `models:` set to
`--repo_id` and the package's source beside `app.py` (see layoutlm_roialign/space.py).

A push that fails (no network, a refused token) ends with one line saying what failed and what was kept, exit
status 1; the folder is changed only after its push succeeded. Bad arguments exit with status 2.
"""

import argparse
import sys


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the checkpoint folder (e.g. runs/main/final)")
    parser.add_argument("--repo_id", required=True, help="the model repository to create or update (user/name)")
    parser.add_argument("--space", help="also create or update this Gradio Space (user/name) running the demo")
    parser.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the one `hf auth login` saved)")
    parser.add_argument("--private", action="store_true", help="create the repositories as private")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from huggingface_hub import get_token

    from layoutlm_roialign.hub import HubError, push_folder_to_hub
    from layoutlm_roialign.space import link_model_card_to_space, linked_model_card, push_space, space_url

    token = args.token or get_token()
    if not token:
        parser.error("publishing needs a Hugging Face token: pass --token, set HF_TOKEN, or run `hf auth login`.")
    private = True if args.private else None
    model_url = f"https://huggingface.co/{args.repo_id}"
    try:
        card = {"README.md": linked_model_card(args.model, args.space).encode("utf-8")} if args.space else None
        model_commit = push_folder_to_hub(args.model, args.repo_id, token=token, private=private, replace=card)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    except HubError as err:
        sys.exit(f"publish.py: {err}; nothing was published, and {args.model} is as it was.")
    if args.space:
        link_model_card_to_space(args.model, args.space)  # the card as published
    result = {"model": model_url, "model_commit": str(model_commit)}
    print(f"Model: {result['model']}")
    if args.space:
        try:
            result["space_commit"] = str(push_space(args.space, args.repo_id, token=token, private=private))
        except HubError as err:
            sys.exit(
                f"publish.py: {err}; the model was published at {model_url} with a card linking to the Space (here "
                "too, in README.md): run the same command again to publish the Space."
            )
        result["space"] = space_url(args.space)
        print(f"Space: {result['space']} (it builds for a few minutes after the first push)")
    return result


if __name__ == "__main__":
    main()
