import sys

from tagger_app.app import main

sys.exit(main())
