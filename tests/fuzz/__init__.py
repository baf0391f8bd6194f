"""Coverage-guided fuzz targets (atheris/libFuzzer); see docs/fuzzing.md.

Not collected by pytest (the files are ``fuzz_*.py``); tests/integration/test_fuzz_atheris.py runs
each
one for a bounded number of inputs."""
