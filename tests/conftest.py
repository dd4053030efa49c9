"""The fixtures every tier may use, as plugins (each module's fixtures by name, no star imports)."""

pytest_plugins = [
    "tests.fixtures.app",
    "tests.fixtures.database",
    "tests.fixtures.images",
    "tests.fixtures.netns",
    "tests.fixtures.processes",
    "tests.fixtures.proxy",
    "tests.fixtures.s3",
]
