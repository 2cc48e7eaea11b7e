"""The names this module used to hold, from the modules that hold them now (by job): building models
(`model_factory`), label sets (`label_sets`), checkpoint folders' files (`checkpoint_files`), the final folder
(`final_folder`), resuming (`resuming`) and backbone weights under other key names (`assembly`).
"""

from .assembly import map_state_dict_by_position
from .checkpoint_files import CHECKPOINT_FILE, check_complete_checkpoint, is_complete_checkpoint, is_written_checkpoint
from .final_folder import FINAL_FOLDER, prepare_final_folder, remove_stale_temporary_folders, save_folder_atomically
from .label_sets import check_label_set, load_checkpoint_for_labels
from .model_factory import TEXT_SIZE_FIELDS, build_model_and_processor, is_pretraining_checkpoint
from .resuming import completed_run, last_complete_checkpoint, resume_checkpoint, resumes_last

__all__ = [
    "CHECKPOINT_FILE",
    "FINAL_FOLDER",
    "TEXT_SIZE_FIELDS",
    "build_model_and_processor",
    "check_complete_checkpoint",
    "check_label_set",
    "completed_run",
    "is_complete_checkpoint",
    "is_pretraining_checkpoint",
    "is_written_checkpoint",
    "last_complete_checkpoint",
    "load_checkpoint_for_labels",
    "map_state_dict_by_position",
    "prepare_final_folder",
    "remove_stale_temporary_folders",
    "resume_checkpoint",
    "resumes_last",
    "save_folder_atomically",
]
