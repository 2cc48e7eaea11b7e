"""One check of a complete checkpoint folder, asked by the loader, the Hub push and resume alike; distinct from
`is_written_checkpoint` (a folder holding only what a save writes)."""

import json
import os

import pytest
from conftest import save_tiny_checkpoint
from transformers import TrainingArguments

from layoutlm_roialign.checkpoint_files import is_complete_checkpoint, is_written_checkpoint
from layoutlm_roialign.hub import push_folder_to_hub
from layoutlm_roialign.loader import load_model_and_processor
from layoutlm_roialign.resuming import completed_run


def finished_run(out):
    """A run folder as a finished run leaves it: its final checkpoint (with a card), the last Trainer checkpoint at
    the end of its schedule, and the results."""
    final = save_tiny_checkpoint(out / "final")
    (final / "README.md").write_text("# card\n")
    (out / "checkpoint-4").mkdir()
    state = {"global_step": 4, "max_steps": 4, "num_train_epochs": 1}
    (out / "checkpoint-4" / "trainer_state.json").write_text(json.dumps(state))
    (out / "all_results.json").write_text(json.dumps({"eval": {"f1": 0.5}, "final_dir": str(final)}))
    return final


@pytest.mark.parametrize("damage", ["no processor", "weights cut short"])
def test_the_loader_the_hub_push_and_resume_refuse_the_same_incomplete_final_folder(tmp_path, damage):
    out = tmp_path / "run"
    final = finished_run(out)
    args = TrainingArguments(output_dir=str(out), max_steps=4, report_to=[])
    assert completed_run(out, args)["global_step"] == 4
    assert is_complete_checkpoint(final) and is_written_checkpoint(final)
    if damage == "no processor":
        os.remove(final / "processor_config.json")
        message = r"is not a complete checkpoint folder; missing \['processor_config\.json'\]"
    else:
        weights = final / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: os.path.getsize(weights) // 2])
        message = r"model\.safetensors is damaged or incomplete: it is \d+ bytes but its header describes"
    with pytest.raises(ValueError, match=message):
        load_model_and_processor(final)
    with pytest.raises(ValueError, match=message):
        push_folder_to_hub(final, "me/model", token="hf_fake")
    assert completed_run(out, args) is None  # the run trains again instead of reporting a final folder that fails
    assert not is_complete_checkpoint(final) and is_written_checkpoint(final)  # still one a run may replace
