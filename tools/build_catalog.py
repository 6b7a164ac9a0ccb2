"""Build the client's built-in model catalog from the captured real WanGP answers.

    python tools/build_catalog.py                 # the captures kept in tests/captures/ (gzipped)
    python tools/build_catalog.py DIR             # a directory of the same captures, uncompressed

Writes blender_movie_director/backend/wan2gp/data/catalog.json: every model type known from WanGP 12.60
(list_model_metadata, 217 models) and 6.31 (its model dropdown), with family, name, inputs and outputs.
The client uses it offline (enum, categories, "did you mean"); the live server's own form always wins.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "tests/captures"
OUT = ROOT / "blender_movie_director/backend/wan2gp/data/catalog.json"


def read_capture(folder: Path, name: str) -> Any:
    """The parsed JSON of capture ``name`` in ``folder``: ``name`` as is, else ``name.gz``."""
    plain = folder / name
    if plain.is_file():
        return json.loads(plain.read_text())
    with gzip.open(folder / f"{name}.gz", "rt", encoding="utf-8") as f:
        return json.load(f)


def main(captures: Path = CAPTURES) -> None:
    models: dict[str, dict] = {}
    for m in read_capture(captures, "head_model_catalog.json"):
        models[m["model_type"]] = {
            "family": m["family"],
            "family_label": m["family_label"],
            "base_model_type": m["base_model_type"],
            "name": m["name"],
            "inputs": m["inputs"],
            "outputs": m["main_output"],
            "versions": ["12"],
        }
    config = read_capture(captures, "2025-06_config.json")
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
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else CAPTURES)
