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
# must know about (degrees with a calm code, calendar values). Schema 3: some input is a
# neighbouring station's reading, which the hub may leave missing (NaN in the window).
# The spec records the version as a number, the metadata as its text.
PLAIN_SCHEMA_VERSION = 1
SCHEMA_VERSION = 2  # what the toolkit writes when a model needs an encoding
NEIGHBOUR_SCHEMA_VERSION = 3  # what it writes when a model reads neighbours' readings
SUPPORTED_SCHEMA_VERSIONS = (PLAIN_SCHEMA_VERSION, SCHEMA_VERSION, NEIGHBOUR_SCHEMA_VERSION)

# The graph's one input and one output.
INPUT_NAME = "window"
OUTPUT_NAME = "forecast"

# Beside an exported model: artifacts with their sha256, checked before a model is used.
MANIFEST_NAME = "manifest.json"

# How a raw column a hub reads becomes the model's inputs.
# MASKED: a neighbour's reading; NaN means it did not arrive, and the graph replaces it
# by its fill and a 0/1 presence column (docs/graph-contract.md, *Neighbours*).
NUMERIC, DIRECTION, CYCLIC, MASKED = "numeric", "direction", "cyclic", "masked"
KINDS = (NUMERIC, DIRECTION, CYCLIC, MASKED)

# A neighbour's column is named READING@STATION (PM2.5@dongsi).
NEIGHBOUR_SEPARATOR = "@"
PRESENT_SUFFIX = "_present"

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
