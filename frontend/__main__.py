"""`python -m frontend --api URL`: the dashboard served alone."""

from frontend.app import main

main()
