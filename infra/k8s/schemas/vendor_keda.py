"""Refresh the vendored KEDA schemas here from KEDA's Go module (by hand; tests never fetch).

    .venv/bin/python infra/k8s/schemas/vendor_keda.py            # KEDA_VERSION below
    .venv/bin/python infra/k8s/schemas/vendor_keda.py v2.21.0    # another exact version

It runs ``go mod download -json github.com/kedacore/keda/v2@<version>`` (the Go module proxy
serves the module zip; exact versions only) and writes:

- ``keda.sh_v1alpha1_scaledobject.json``: ``spec.versions[v1alpha1].schema.openAPIV3Schema`` of
  ``config/crd/bases/keda.sh_scaledobjects.yaml`` (the CRD the KEDA operator installs);
- ``keda_kafka_trigger_metadata.json``: the ``kafka`` trigger's metadata parameters, read from
  the ``keda:"name=...,order=triggerMetadata..."`` struct tags of ``pkg/scalers/kafka_scaler.go``
  (the CRD types ``metadata`` as a free string map, so the names are checked from this list).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

MODULE = "github.com/kedacore/keda/v2"
KEDA_VERSION = "v2.21.0"
CRD_PATH = "config/crd/bases/keda.sh_scaledobjects.yaml"
SCALER_PATH = "pkg/scalers/kafka_scaler.go"
HERE = Path(__file__).resolve().parent

_TAG = re.compile(r'^\s*\w+\s+(\S+)\s+`keda:"([^"]+)"`', re.MULTILINE)


def module_dir(version: str) -> Path:
    """Download the module (once; Go caches it) and return its extracted folder."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{MODULE}@{version}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Path(json.loads(out)["Dir"])


def scaledobject_schema(root: Path, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((root / CRD_PATH).read_text())
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
    return {
        "$comment": f"openAPIV3Schema of {MODULE}@{version} {CRD_PATH} (v1alpha1); "
        "refresh with infra/k8s/schemas/vendor_keda.py",
        **schema,
    }


def kafka_trigger_metadata(root: Path, version: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for go_type, tag in _TAG.findall((root / SCALER_PATH).read_text()):
        fields = dict(part.split("=", 1) if "=" in part else (part, "") for part in tag.split(","))
        if "triggerMetadata" not in fields.get("order", "").split(";"):
            continue
        params[fields["name"]] = {
            "go_type": go_type,
            "required": "optional" not in fields and "default" not in fields,
            "enum": fields["enum"].split(";") if "enum" in fields else None,
            "default": fields.get("default"),
        }
    return {
        "$comment": f"kafka trigger metadata of {MODULE}@{version} {SCALER_PATH}; refresh "
        "with infra/k8s/schemas/vendor_keda.py",
        "parameters": params,
    }


def main(version: str = KEDA_VERSION) -> None:
    root = module_dir(version)
    for name, doc in (
        ("keda.sh_v1alpha1_scaledobject.json", scaledobject_schema(root, version)),
        ("keda_kafka_trigger_metadata.json", kafka_trigger_metadata(root, version)),
    ):
        (HERE / name).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
