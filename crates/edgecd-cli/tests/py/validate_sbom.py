"""Validates a CycloneDX SBOM with cyclonedx-python-lib's strict JSON validator (1.6).

Usage: validate_sbom.py SBOM.json → exit 0 if valid; prints the error and exits 1 otherwise.
"""
import sys

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

with open(sys.argv[1]) as f:
    data = f.read()
err = JsonStrictValidator(SchemaVersion.V1_6).validate_str(data)
if err is not None:
    print(f"invalid CycloneDX 1.6: {err}")
    sys.exit(1)
print("valid")
