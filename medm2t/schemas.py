"""One JSON Schema per message type, for subscribers in other languages (`medm2t schema export`).

Every schema is closed (`additionalProperties: false` on every object), so the compatibility rule in
docs/schemas.md applies: a change that an old reader would reject is a new topic version, never an edit
of v1. `docs/schemas/` holds the published schemas and a test keeps the code equal to them.
"""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from medm2t.events import EVENT_TYPES, OUTPUT_TYPES, SCHEMA_VERSION, VERSIONS, ObservationSet
from medm2t.fhir import RiskAssessmentV1

# "{kind}.v{N}" -> its model: every version still published.
MESSAGE_TYPES: dict[str, type[BaseModel]] = {
    f"{kind}.v{version}": model
    for kind, model in {**EVENT_TYPES, **OUTPUT_TYPES, "fhir_risk_assessment": RiskAssessmentV1,
                        "observation_set": ObservationSet}.items()
    for version, model in VERSIONS.get(kind, {SCHEMA_VERSION: model}).items()}


def schema_of(model: type[BaseModel]) -> dict:
    return model.model_json_schema(mode="serialization")


def export_schemas(out_dir: Path) -> list[Path]:
    """Write one `{kind}.v{N}.schema.json` per message type and version into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in MESSAGE_TYPES.items():
        path = out_dir / f"{name}.schema.json"
        path.write_text(json.dumps(schema_of(model), indent=2) + "\n")
        written.append(path)
    return written
