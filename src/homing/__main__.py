from __future__ import annotations

from homing.cli import main

raise SystemExit(main())
