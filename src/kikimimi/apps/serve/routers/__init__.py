"""The routers of `kikimimi serve`, one per concern (FastAPI's "bigger applications" layout): :mod:`.search`
(text and example search), :mod:`.tags` (zero-shot tags, labels, the combined example answer),
:mod:`.captions`, :mod:`.describe` (timelines of indexed files), :mod:`.media` (audio streaming, spectrograms),
:mod:`.status` (status, re-scan) and :mod:`.page` (the page and the offline API documentation)."""

from kikimimi.apps.serve.routers import captions, describe, media, page, search, status, tags

ROUTERS = (page.router, status.router, search.router, tags.router, captions.router, describe.router,
           media.router)

__all__ = ["ROUTERS"]
