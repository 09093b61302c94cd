from rmswatch.cli import main

raise SystemExit(main())
