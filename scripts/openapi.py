"""Write the API's OpenAPI spec (the contract the web studio's typed client is generated
from): ``python scripts/openapi.py frontend/openapi.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from saestudio.api.app import create_app
from saestudio.settings import Settings


def spec() -> str:
    app = create_app(Settings(data_dir=Path("data")))
    return json.dumps(app.openapi(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(spec())
