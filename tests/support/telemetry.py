"""The environment a telemetry test runs in.

onnxruntime turns its telemetry off by itself when one of these is set (its library names
them beside ORT_DISABLE_TELEMETRY): on a CI runner a control run would see nothing and the
"no telemetry" checks would pass for the wrong reason. Every telemetry test clears them."""

import os

CI_MARKERS = ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL",
              "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER",
              "ORT_RUNNING_UNIT_TESTS")


def telemetry_environment(home, setting=None) -> dict:
    """This process's environment with HOME moved, the CI markers cleared and
    ORT_DISABLE_TELEMETRY set to `setting` (left unset when None)."""
    cleared = ("ORT_DISABLE_TELEMETRY", *CI_MARKERS)
    environment = {key: value for key, value in os.environ.items() if key not in cleared}
    environment["HOME"] = str(home)
    if setting is not None:
        environment["ORT_DISABLE_TELEMETRY"] = setting
    return environment
