"""Build the client's built-in model catalog from the captured real WanGP answers.

    python tools/build_catalog.py ../shared/wan2gp-real

Writes blender_movie_director/backend/wan2gp/data/catalog.json: every model type known from WanGP 12.60
(list_model_metadata, 217 models) and 6.31 (its model dropdown), with family, name, inputs and outputs.
The client uses it offline (enum, categories, "did you mean"); the live server's own form always wins.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "blender_movie_director/backend/wan2gp/data/catalog.json"


def main(real: Path) -> None:
    models: dict[str, dict] = {}
    for m in json.loads((real / "head_model_catalog.json").read_text()):
        models[m["model_type"]] = {
            "family": m["family"],
            "family_label": m["family_label"],
            "base_model_type": m["base_model_type"],
            "name": m["name"],
            "inputs": m["inputs"],
            "outputs": m["main_output"],
            "versions": ["12"],
        }
    config = json.loads((real / "2025-06_config.json").read_text())
    dropdown = next(c for c in config["components"] if c["id"] == 7)  # v6.31's model dropdown
    for label, model_type in dropdown["props"]["choices"]:
        entry = models.setdefault(
            model_type,
            {
                "family": "hunyuan" if model_type.startswith("hunyuan") else
                          "ltxv" if model_type.startswith("ltxv") else "wan",
                "family_label": "", "base_model_type": model_type, "name": label,
                "inputs": ["text"], "outputs": ["video"], "versions": [],
            },
        )
        entry["versions"].append("6")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dict(sorted(models.items())), indent=1) + "\n")
    print(f"{len(models)} models -> {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/wan2gp-real"))
