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
# Schema 4: the graph also gives quantiles per lead and exceedance probabilities of alert
# thresholds (the spec's `probabilistic` part); it may read neighbours too.
PROBABILISTIC_SCHEMA_VERSION = 4
SUPPORTED_SCHEMA_VERSIONS = (PLAIN_SCHEMA_VERSION, SCHEMA_VERSION, NEIGHBOUR_SCHEMA_VERSION,
                             PROBABILISTIC_SCHEMA_VERSION)

# The graph's one input and its outputs: every model gives `forecast`; a schema-4 model
# also gives QUANTILES_NAME [batch, horizon, Q] and EXCEEDANCE_NAME [batch, horizon, K].
INPUT_NAME = "window"
OUTPUT_NAME = "forecast"
QUANTILES_NAME = "quantiles"
EXCEEDANCE_NAME = "exceedance"
ALERT_OPERATORS = (">", "<")  # an alert asks P(target > threshold) or P(target < threshold)

# Beside an exported model: artifacts with their sha256, checked before a model is used.
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "model.sig"  # a release's signature over the bundle's files (edgecast sign)

# The files of a model bundle (models/NAME/), named here once. The trainer writes:
KERAS_FILE = "model.keras"  # the Keras model, in scaled space
SPEC_FILE = "preprocessing.json"  # the preprocessing spec
METRICS_FILE = "metrics.json"  # test-split errors of the model and the baselines
TRAINING_FILE = "training.json"  # settings, data source and sha256, split, history
WINDOWS_FILE = "windows.npz"  # held-out windows (and a training sample for calibration)
# Export adds MANIFEST_NAME and:
ONNX_FILE = "model.onnx"  # what a hub runs
TFLITE_FILE = "model.tflite"
BUILTIN_TFLITE_FILE = "model.builtin.tflite"  # builtin ops only, the LSTM unrolled
QUANTIZED_FILES = {  # quantization mode -> its file
    "onnx-int8": "model.int8.onnx", "onnx-static-int8": "model.static-int8.onnx", "tflite-fp16": "model.fp16.tflite",
    "tflite-dynamic-int8": "model.dynamic-int8.tflite", "tflite-int8": "model.int8.tflite",
    "tflite-int16x8": "model.int16x8.tflite",
}
MICRO_DIR = "micro"  # the microcontroller build (a folder), described by MICRO_DIR/MICRO_FILE
MICRO_FILE = "micro.json"
# `edgecast report` writes, by default:
REPORT_FILE = "report.md"
REPORT_PLOT_FILE = "report.png"

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
