from tests.fixtures.database import *  # noqa: F403
