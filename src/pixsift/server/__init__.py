"""The HTTP service: a thin FastAPI face over one shared `Library` (install `pixsift[server]`).

from pixsift import Library
from pixsift.server import ServerSettings, create_app
app = create_app(Library.open("~/my-library", create=False), ServerSettings(api_key="..."))
"""

from pixsift.server.app import create_app
from pixsift.server.settings import ServerSettings, check_bind, is_loopback

__all__ = ["ServerSettings", "check_bind", "create_app", "is_loopback"]
