"""Shared pytest set-up. Fixture plugins live in tests/support/ and are listed here."""

pytest_plugins: list[str] = ["tests.support.framework_fixtures", "tests.support.k8s_fixtures"]
