"""The spec language: YAML with line marks, blocks, overrides, the NetSpec model, the
translation of pydantic errors to spec lines, and the JSON Schema."""
