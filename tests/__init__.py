"""The test suite, a package so that test folders named after the packages (tests/stream/, ...) never shadow them:
its modules import as tests.<folder>.<module>, and shared helpers as tests.helpers.<topic>."""
