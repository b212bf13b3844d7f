"""`edgecast export --target mcu`: the bundle's microcontroller build, verified in TFLM.

A step of the export pipeline (export/pipeline.py), which records its result in the
manifest's "micro" section. It writes BUNDLE/micro/ (whole or not at all):
  model.int8.tflite or model.builtin.tflite   the file the microcontroller runs
  model_data.cc, model_data.h                 that file as an aligned constant byte array
  op_resolver.h                               MicroMutableOpResolver<N> with exactly its ops
  main.cc                                     one forecast (with a schema-4 model's quantiles
                                              and probabilities), from templates/micro_main.cc.in
  micro.json                                  the choice, its reason and every figure below

The choice (checks.py): the full-integer file (fused LSTM, int8) when, from TFLM's own
outputs, its test RMSE is at most ERROR_BUDGET_PCT above the float model's at every lead,
its forecasts do not collapse (distinct values per window against the float forecast on
the int8 output step) and TFLM agrees with LiteRT; otherwise the float32 builtin-ops file,
with the failed condition as the reason. A schema-4 model always runs the float32 file
(checks.py SCHEMA4_FLOAT), whose quantiles and probabilities are held like its forecast
(export/distribution.py distribution_errors). Both are checked in TensorFlow Lite Micro's
interpreter (the tflite-micro package, always in a child process: child.py) on the
bundle's held-out test windows, the LSTM state reset before each window:
  float32: within parity.TOLERANCE of the Keras pipeline (the parity reference);
  int8: TFLM's integer kernels against LiteRT's on the same file. Their LSTM kernels
        round some intermediate steps differently, so single forecasts differ by a few
        steps of the int8 output (one step is its dequantization scale: 2.15 ug/m3 on a
        Changping horizon-6 model, where TFLM and LiteRT were at most 2 steps apart at any
        lead). Passes when, at each lead, the largest |TFLM - LiteRT| is at most
        LITERT_MAX_STEPS and the mean at most LITERT_MEAN_STEPS output steps; the
        per-lead figures, mean |TFLM - LiteRT| / mean |LiteRT|, the share of identical
        forecasts and RMS(TFLM - LiteRT) / RMS(LiteRT) are recorded.
RAM: the smallest arena TFLM accepts, measured in child processes, with a margin
(tflm.py). Flash: the model array plus an estimate of the interpreter and the kernels
of its ops (flash.py).

Modules: build.py (the step and verify_micro), checks.py (the candidates in TFLM and the
choice), tflm.py (child runs, arena, timing), child.py (the child process), cpp.py (the
generated C++), flash.py (the flash estimate). This file imports nothing, so the child
process (`python -m edgecast.exporter.micro.child`) starts without the rest.
"""
