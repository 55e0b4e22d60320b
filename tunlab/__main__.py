from tunlab.cli import main

raise SystemExit(main())
