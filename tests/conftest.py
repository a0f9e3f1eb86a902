"""Settings for the whole suite."""

from hypothesis import HealthCheck, settings

# Hypothesis's timing checks (a per-example deadline, "data generation too slow") measure
# the machine, not the code: on two shared cores under xdist they fail at random. The
# suite never asserts timings; hypothesis follows the same rule.
settings.register_profile(
    "suite", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("suite")
