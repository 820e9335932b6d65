"""User tools that are not suites: scanning real cutouts, the grading page, bench predict, and
the performance benchmarks. They sit on top of the core and the kinds."""
