"""``python -m blender_movie_director``: the same as the ``movie-director`` command."""

from .cli import main

raise SystemExit(main())
