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
    out, text = Path(sys.argv[1]), spec()
    # rewritten only when the API changed: make rebuilds the bundle on a newer file
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
        print(f"{out}: updated from the API")
