"""The graph contract between the edgecast toolkit and this runtime, defined once.

The toolkit imports these names when it writes a model and the runtime when it reads
one, so the two cannot drift apart. A new schema version is added here, and the runtime
keeps serving every older one. The meaning of each entry is in docs/graph-contract.md.
"""

# ONNX metadata_props of an exported model.
SCHEMA_KEY = "edgecast.schema_version"
SPEC_KEY = "edgecast.spec"
NAME_KEY = "edgecast.model_name"

# Schema 1: every input is a plain reading. Schema 2: some input has an encoding the hub
# must know about (degrees with a calm code, calendar values). The spec records the
# version as a number, the metadata as its text.
PLAIN_SCHEMA_VERSION = 1
SCHEMA_VERSION = 2  # what the toolkit writes when a model needs an encoding
SUPPORTED_SCHEMA_VERSIONS = (PLAIN_SCHEMA_VERSION, SCHEMA_VERSION)

# The graph's one input and one output.
INPUT_NAME = "window"
OUTPUT_NAME = "forecast"

# Beside an exported model: artifacts with their sha256, checked before a model is used.
MANIFEST_NAME = "manifest.json"

# How a raw column a hub reads becomes the model's inputs.
NUMERIC, DIRECTION, CYCLIC = "numeric", "direction", "cyclic"
KINDS = (NUMERIC, DIRECTION, CYCLIC)

# Wind directions: compass points clockwise from north, and the calm codes.
COMPASS_POINTS = ("N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE",
                  "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW")
COMPASS_DEGREES = {point: index * 22.5 for index, point in enumerate(COMPASS_POINTS)}
CALM_CODES = ("cv", "calm", "c")  # `cv` ("calm and variable") in the Beijing data
CALM_DEGREES = -1.0  # any negative direction means calm; this is the one written

# Calendar features derived from a row's timestamp in the data's clock, with their period.
CALENDAR_PERIODS = {"hour_of_day": 24, "day_of_week": 7}


def schema_version_text(version: int) -> str:
    """The schema version as the ONNX metadata carries it."""
    return str(version)


SUPPORTED_SCHEMA_TEXTS = tuple(schema_version_text(v) for v in SUPPORTED_SCHEMA_VERSIONS)
