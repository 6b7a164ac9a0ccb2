"""Which of the real UI's event listeners the emulator registers, and in which order (no gradio import here).

Each entry is a list of real dependency ids (the ``/config`` ids of the flavour's capture): the first keeps its
real trigger, the others are its ``.then`` steps. A dict entry replaces the first step's trigger by an
emulator-made button (``"extra"``).

Gradio numbers repeated function names ``_1``, ``_2``, ... in registration order. The order below is the
emulator's own and puts decoy chains (``save_inputs`` with target ``"settings"``, preset, tab and settings-file
chains, a second ``fill_inputs``) before the generation chain, so every flavour's ``_N`` numbers differ from its
real server's: a client that hard-codes them fails, one that resolves names from ``/config`` works.
``data/extract.py`` extracts exactly these dependencies.
"""

from __future__ import annotations

from typing import Any

CHAINS: dict[str, list[list[Any]]] = {
    "v12": [
        [118, 119],  # Save Settings: validate_wizard_prompt -> save_inputs (target "settings")
        [206, 207, 208, 209, 210, 211, 212],  # model switch: ... goto_model_type_with_filter ... fill_inputs
        [312, 313, 314],  # refresh form: fill_inputs_1 -> validate_wizard_prompt_2
        [194, 195, 196, 197, 198],  # Export Settings
        [203, 204, 205],  # Load Settings From File
        [184, 185, 186],  # save preset (decoy)
        [189, 190],  # apply preset (decoy)
        [321], [322],  # Generate / Add To Queue buttons write a fresh id into hidden trigger textboxes
        [323, 324, 325, 326],  # add to queue: ... save_inputs_6 -> process_prompt_and_add_tasks -> update_status
        [327, 328, 329, 330, 331, 332, 333, 334, 335],  # generate: ... process_tasks -> finalize_generation
        [336, 337, 338, 339, 340, 341, 342],  # Load Queue / autoload
        [93], [94], [90], [319],  # status stream, gallery refresh, preview, model dropdown refresh
        [111], [112], [113],
        [{"dep": 113, "extra": "abort_edit"}],  # second Abort button (the Edit tab's): abort_generation_1
        [114], [115], [116], [117],  # abort_generation_2(client_id), early stop, one more sample/window
        [351, 352, 353], [354, 355],  # Save Queue, Clear Queue
        [629, 630], [632, 633],  # plugin tab selects (decoys): validate_wizard_prompt_N -> save_inputs_N
        [67], [68], [73],  # the control dropdowns: refresh_video_prompt_type_image_refs, _video_guide, _video_mask
    ],
    "v11": [
        [90, 91],  # Save Settings (target "settings")
        [159, 160, 161, 162],  # Export Settings
        [182, 183, 184, 185, 186],  # model dropdown: validate -> save_inputs -> change_model -> fill_inputs
        [170, 171, 172],  # hidden model target: validate -> save_inputs -> goto_model_type
        [177, 178],  # refresh form: fill_inputs_1 -> validate
        [179], [180], [181],  # change_model_family, change_model_base_types, refresh_model_dropdowns
        [167, 168, 169],  # Load Settings From File
        [149, 150, 151], [154, 155],  # save / apply preset (decoys)
        [457, 458], [460, 461],  # tab selects (decoys)
        [187], [188],  # Generate / Add To Queue write the hidden triggers
        [193, 194, 195, 196, 197, 198, 199, 200, 201],  # generate chain
        [189, 190, 191, 192],  # add to queue chain
        [202, 203, 204, 205, 206, 207, 208],  # Load Queue / autoload
        [69], [70], [65],  # status stream, gallery refresh, preview
        [83], [84], [85],
        [{"dep": 85, "extra": "abort_edit"}],  # a second Abort button: the client_id one becomes _2
        [86], [87], [88], [89],  # abort_generation_N(client_id), early stop, one more sample / window
        [217, 218], [219, 220],  # Save Queue, Clear Queue
        [47], [48], [52],  # the control dropdowns: refresh_video_prompt_type_image_refs, _video_guide, _video_mask
    ],
    "v9": [
        [69, 70],  # Save Settings (target "settings")
        [131, 132, 133, 134, 135],  # model dropdown: validate -> save_inputs -> change_model -> fill_inputs
        [127, 128],  # refresh form: fill_inputs_1 -> validate
        [120, 121, 122],  # hidden model target: validate -> save_inputs -> goto_model_type
        [129], [130],  # change_model_family, change_model_base_types
        [109, 110, 111, 112],  # Export Settings
        [117, 118, 119],  # Load Settings From File
        [99, 100, 101], [104, 105],  # save / apply preset (decoys)
        [362, 363], [365, 366],  # tab selects (decoys)
        [136], [137],  # Generate / Add To Queue write the hidden triggers
        [138, 139, 140, 141],  # add to queue chain
        [142, 143, 144, 145, 146, 147, 148, 149, 150],  # generate chain
        [151, 152, 153, 154, 155, 156, 157],  # Load Queue / autoload
        [60], [61], [56],  # status stream, gallery refresh, preview
        [64], [65],
        [66], [{"dep": 66, "extra": "abort_edit"}],  # Abort, and a second Abort button (abort_generation_1)
        [67], [68],  # one more sample / window
        [166, 167], [168, 169],  # Save Queue, Clear Queue
        [39], [40], [44],  # the control dropdowns: refresh_video_prompt_type_image_refs, _video_guide, _video_mask
    ],
    "v8": [
        [28, 29],  # Save Settings (target "settings")
        [52, 53, 54], [57, 58],  # save / apply preset (decoys)
        [74, 75],  # refresh form: fill_inputs -> validate
        [76],  # change_model_family
        [77, 78, 79, 80, 81],  # model dropdown: validate -> save_inputs -> change_model -> fill_inputs_1
        [62, 63, 64, 65],  # Export Settings
        [70, 71, 72],  # Load Settings From File
        [30, 31, 32], [36, 37],  # use a gallery video's settings, prompt refresh (decoys)
        [82], [112],  # Generate / Add To Queue write the hidden triggers
        [113, 114, 115, 116, 117],  # add to queue chain
        [83, 84, 85, 86, 87, 88, 89, 90, 91, 92],  # generate chain
        [93, 94, 95, 96, 97, 98, 99],  # Load Queue / autoload
        [22], [23], [20],  # status stream, gallery refresh, preview
        [25], [26], [27],
        [108, 109], [110, 111],  # Save Queue, Clear Queue
        [6], [7], [8],  # the control dropdowns: refresh_video_prompt_type_image_refs, _video_guide, _video_mask
    ],
    "v6": [
        [46, 47, 48, 49, 50],  # model dropdown: validate -> save_inputs -> change_model -> fill_inputs
        [44, 45],  # refresh form: fill_inputs_1 -> validate_wizard_prompt_1
        [37, 38, 39, 40],  # Export Settings
        [41, 42, 43],  # Load Settings
        [34, 35, 36],  # use settings of a gallery video (decoy)
        [51, 52, 53, 54, 55, 56, 57, 58, 59, 60],  # generate: ... save_inputs_4 -> process_prompt_and_add_tasks
        [32, 33],  # Save Settings (decoy): validate_wizard_prompt_6 -> save_inputs_5 (target "settings")
        [80, 81, 82, 83, 84],  # add to queue
        [15, 16],  # save preset (decoy)
        [61, 62, 63, 64, 65, 66, 67],  # Load Queue / autoload
        [25], [26], [27], [29], [30], [31],
        [76, 77], [78, 79],  # Save Queue, Clear Queue
        [2], [3], [4],  # the control dropdowns: refresh_video_prompt_type_image_refs, _video_guide, _video_mask
    ],
}


def dependency_ids(flavour: str) -> list[int]:
    """The real dependency ids a flavour registers (each once)."""
    ids: list[int] = []
    for chain in CHAINS[flavour]:
        for entry in chain:
            dep = entry["dep"] if isinstance(entry, dict) else entry
            if dep not in ids:
                ids.append(dep)
    return ids
