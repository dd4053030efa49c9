from tests.fixtures.app import *  # noqa: F403
from tests.fixtures.database import *  # noqa: F403
from tests.fixtures.images import *  # noqa: F403
from tests.fixtures.netns import *  # noqa: F403
from tests.fixtures.processes import *  # noqa: F403
from tests.fixtures.proxy import *  # noqa: F403
from tests.fixtures.s3 import *  # noqa: F403
