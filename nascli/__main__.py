from nascli.cli.app import main

main()
