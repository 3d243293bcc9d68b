from st_cli.cli import main

main()
