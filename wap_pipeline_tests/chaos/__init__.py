"""The chaos suite: seeded fault schedules, recovered with documented commands, checked for lost or
duplicated messages. Run it with `make chaos` or `python -m wap_pipeline_tests.chaos --help`."""
