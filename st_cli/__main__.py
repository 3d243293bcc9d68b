from st_cli.cli.app import main

main()
