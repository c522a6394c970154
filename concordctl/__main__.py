from concordctl.cli import main

main()
